"""AnomalyGPT composed: ImageBind → anomaly map → prompt learner → LLM verdict and answer.

One query image (reference CASIA-IVA-Lab/AnomalyGPT `code/model/openllama.py`,
`extract_multimodal_feature`, `prepare_generation_embedding`, `generate`):

1. ImageBind-Huge encodes the image: global embedding [B, 1024] and four taps [B, 257, 1280].
2. The image decoder makes a [B, 224, 224] map: zero-shot from the state prompts of the class
   name, or, when normal reference images are given, the few-shot map, which replaces it.
3. The prompt learner turns the map into 18 prompt embeddings; `llama_proj` turns the global
   embedding into one image token; both are spliced into the dialogue (`llm.AnomalyLLM`).
4. One left-padded prefill of the whole batch reads P(yes) at the answer position; only the
   rows judged anomalous (by default) generate their answer sentence, which names positions.

The reference looks the class name up in the prompt and falls back to "object" (the web demo
always uses "object"); here the caller names the class, and `chat` defaults to "object".
The image encoder is pluggable (`image_encoder.ImageEncoder`): ImageBind by default, or any
encoder passed to `compose` (DINOv2-S in the CPU profile, few-shot only: it has no text tower,
so asking for a zero-shot map raises). A vision-only encoder gets a decoder with learned state
features; with `map_mode="average"` (the CPU composition) the map the prompt learner reads
is the mean of that learned map and the few-shot map (the reference's commented-out
`(anomaly_map_ret + 1 - sim) / 2`), so the trained decoder sharpens what the references
give. The language model and its tokenizer are injected; `from_official` builds everything
on the `meta` device, allocates it once on the target device and fills it from the official
files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal, NamedTuple, cast

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..positions import NO_ANOMALY
from ..weights.checkpoints import (
    LoadedDelta,
    load_anomalygpt_delta,
    load_pandagpt_delta,
    read_state_dict,
    save_anomalygpt_delta,
)
from ..weights.lm_weights import load_hf_lm_weights
from .conversation import Conversation, parse_answer, query_text
from .decoder import ImageDecoder, reference_map
from .image_encoder import ImageEncoder, no_text_encoder
from .imagebind import ImageBindConfig, ImageBindEncoder
from .llm import AnomalyLLM, LoraSettings
from .prompt_learner import CHANNELS, PromptLearner
from .state_prompts import text_features

__all__ = [
    "AnomalyGPT",
    "AnomalyGPTConfig",
    "PromptInputs",
    "Verdict",
    "load_hf_lm_weights",
]

DEFAULT_CLASS = "object"  # the reference's class name when none is known
MAP_SIZE = 224  # the prompt learner's input size
PROMPT_MAP_CAP = 4.0  # calibrated prompt maps: threshold units above this are this
YES_PLAIN = "Yes, there is an anomaly in the image."  # anomalous rows that generate no answer
Explain = Literal["anomalous", "all", "none"]
MapMode = Literal["replace", "average"]
PromptMap = Literal["raw", "calibrated", "scored"]


@dataclass(frozen=True)
class AnomalyGPTConfig:
    """Sizes of the composed model.

    Attributes:
        imagebind: ImageBind sizes (its `tap_layers` feed the decoder), built by the
            constructor; None when the encoder is passed in (`AnomalyGPT.compose`).
        llm_hidden: Hidden size of the injected LM (prompt-learner output, `llama_proj` output).
        lora: LoRA on the LM's attention, or None to use the LM as it is.
        num_base_prompts: Learned prompts before the 9 image prompts.
        add_bos: Prepend BOS; None follows the tokenizer (Vicuna's adds one).
        encoder_taps: 1-based blocks tapped by a passed-in encoder (the DINOv2 adapter's
            `tap_layers`); recorded here so that a delta's layout is known from the config.
        prompt_channels: Conv widths of the prompt learner (the reference's by default).
        map_mode: With references, "replace": the few-shot map replaces the decoder's (the
            reference); "average": the mean of the decoder's learned map and the few-shot map
            (vision-only encoders, whose decoder learns its state features).
        prompt_map: "raw": the prompt learner reads the map as it is (the reference);
            "calibrated": divided by the product's calibrated map threshold (the detector's
            `fewshot.calibration` on the references, passed as `map_scale`), so that the
            prompts read "how far above this product's normal" on every product;
            "scored": the caller's maps in the image score's units (`prompt_maps`: an
            evidence detector's `FewShotDetector.score_maps`, log p / log α of each pixel's
            tail probability, 1.0 = threshold), less `prompt_floor`.
        prompt_floor: "scored" maps: the level read as nothing, ``(m - floor) / (1 - floor)``
            clipped at 0 (1.0 stays the threshold). 0.5 is p = 0.1 at α = 0.01: a pixel
            whose value one normal part in ten reaches is no evidence; between p = 0.1 and
            the threshold the LLM learns what is.
    """

    imagebind: ImageBindConfig | None
    llm_hidden: int
    lora: LoraSettings | None = field(default_factory=LoraSettings.pandagpt)
    num_base_prompts: int = 9
    add_bos: bool | None = None
    encoder_taps: tuple[int, ...] | None = None
    prompt_channels: tuple[int, ...] = CHANNELS
    map_mode: MapMode = "replace"
    prompt_map: PromptMap = "raw"
    prompt_floor: float = 0.0

    @classmethod
    def official_7b(cls) -> AnomalyGPTConfig:
        """The released model: ImageBind-Huge, Vicuna-7B v0 (hidden 4096), PandaGPT LoRA."""
        return cls(ImageBindConfig.huge(), llm_hidden=4096, lora=LoraSettings.pandagpt())

    @classmethod
    def tiny(cls) -> AnomalyGPTConfig:
        """Random-weight size for tests: tiny ImageBind (embed 16), LM hidden 16, LoRA r 4."""
        return cls(ImageBindConfig.tiny(), llm_hidden=16, lora=LoraSettings(r=4, alpha=4))

    @classmethod
    def cpu_small(cls) -> AnomalyGPTConfig:
        """The CPU profile, composed with `AnomalyGPT.compose`.

        DINOv2-S taps 3/5/7/9 (few-shot only), SmolLM2-135M (hidden 576), LoRA r 8 on its
        attention (no dropout: a short CPU training run), a prompt learner narrowed to
        1→4→16→64→128→256 (4.1 M parameters instead of 17, so the fp16 delta stays near
        12 MB), the few-shot map in the units of the product's image score before the prompt
        learner ("scored", floor p = 0.1: in units of the raw threshold a normal grass or
        gravel part read 0.5-0.9 where the training products' normals read 0.2-0.4, and the
        LLM said "Yes" to them; a tail probability is on one scale for every product). The
        decoder's learned-state map did not generalise to unseen products in our
        measurements, so it does not join the served map.
        """
        return cls(None, llm_hidden=576, lora=LoraSettings(r=8, alpha=16, dropout=0.0),
                   encoder_taps=(3, 5, 7, 9), prompt_channels=(1, 4, 16, 64, 128, 256),
                   map_mode="replace", prompt_map="scored", prompt_floor=0.5)


class Verdict(NamedTuple):
    """One image's answer."""

    anomalous: bool  # P(yes) > 0.5
    probability: float  # P(answer starts with "Yes" | it starts with "Yes" or "No")
    score: float  # max of the map: the image-level score for AUROC
    anomaly_map: Tensor  # [224, 224] float32 on the CPU
    positions: list[str]  # 3×3 grid words named in `text`
    text: str  # generated answer, or the fixed "No" sentence when not generated


class PromptInputs(NamedTuple):
    """Everything the LLM needs for a batch, and the maps it was made from."""

    conversations: list[Conversation]
    image_embeds: Tensor  # [B, embed_dim] global ImageBind embeddings
    prompt_embeds: Tensor  # [B, 18, llm_hidden]
    maps: Tensor  # [B, 224, 224] float32


References = Tensor | Sequence[Tensor]  # pixels [K|B,K, 3, S, S] or reference taps


class AnomalyGPT(nn.Module):
    """Image encoder + image decoder + prompt learner + LLM, for verdicts and dialogue.

    Args:
        config: Sizes; `config.llm_hidden` must equal the LM's hidden size.
        lm: Hugging Face causal LM (wrapped with LoRA when `config.lora` is set).
        tokenizer: Its tokenizer.
        encoder: Any `ImageEncoder`; default an `ImageBindEncoder(config.imagebind)`.

    Attribute names give the official delta prefixes: `image_decoder.*`, `prompt_learner.*`,
    and (inside `llm`) `llama_proj.*`, `llama_model.*`.
    """

    def __init__(
        self,
        config: AnomalyGPTConfig,
        lm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        encoder: ImageEncoder | None = None,
    ) -> None:
        super().__init__()
        if encoder is None:
            if config.imagebind is None:
                msg = "config.imagebind is None: pass the image encoder (AnomalyGPT.compose)"
                raise ValueError(msg)
            encoder = ImageBindEncoder(config.imagebind)
        if not isinstance(encoder, nn.Module) or not isinstance(encoder, ImageEncoder):
            msg = f"{type(encoder).__name__} is not an nn.Module ImageEncoder"
            raise TypeError(msg)
        self.config = config
        self.encoder = encoder
        self.image_decoder = ImageDecoder(encoder.vision_width, encoder.embed_dim,
                                          encoder.num_taps,
                                          learned_states=not encoder.supports_text)
        self.prompt_learner = PromptLearner(config.llm_hidden, config.num_base_prompts,
                                            config.prompt_channels)
        self.llm = AnomalyLLM(lm, tokenizer, image_embed_dim=encoder.embed_dim,
                              lora=config.lora, add_bos=config.add_bos)
        if self.llm.hidden_size != config.llm_hidden:
            msg = f"LM hidden size {self.llm.hidden_size} != config.llm_hidden {config.llm_hidden}"
            raise ValueError(msg)
        self._text_cache: dict[str, Tensor] = {}
        self.eval()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def compose(
        cls,
        *,
        encoder: ImageEncoder,
        lm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: AnomalyGPTConfig,
    ) -> AnomalyGPT:
        """AnomalyGPT around a given encoder and LM (e.g. DINOv2-S + SmolLM2, `cpu_small()`).

        The decoder, prompt learner, `llama_proj` and LoRA are freshly initialised: load a
        delta (`load_delta`) before trusting a verdict.
        """
        return cls(config, lm, tokenizer, encoder=encoder)

    @classmethod
    def empty(
        cls,
        config: AnomalyGPTConfig,
        lm_config: PretrainedConfig,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device,
        dtype: torch.dtype,
    ) -> AnomalyGPT:
        """The model with uninitialised weights allocated once, directly on `device`.

        Built on `meta`, cast there (free), then `to_empty`; computed buffers (the text causal
        mask, rotary frequencies in float32) are filled. Every weight must be loaded or
        initialised afterwards.
        """
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(lm_config)
            model = cls(config, lm, tokenizer)
        model.to(dtype=dtype)
        model.to_empty(device=device)
        model.reset_computed_buffers()
        return model

    @torch.no_grad()
    def reset_computed_buffers(self) -> None:
        """Recompute buffers that are not weights (after `to_empty`)."""
        if isinstance(self.encoder, ImageBindEncoder):
            mask = cast("Tensor", self.encoder.text.causal_mask)
            mask.copy_(torch.full(mask.shape, float("-inf"), device=mask.device).triu_(1))
        for module in self.llm.modules():
            if isinstance(getattr(module, "inv_freq", None), Tensor) and hasattr(module, "config"):
                with torch.device(cast("Tensor", module.inv_freq).device):
                    fresh = type(module)(module.config)  # rotary embedding: float32 frequencies
                for name, buffer in fresh.named_buffers(recurse=False):
                    module._buffers[name] = buffer
        self._text_cache.clear()

    @classmethod
    def from_official(
        cls,
        imagebind_path: str | PathLike[str],
        llm_dir: str | PathLike[str],
        pandagpt_path: str | PathLike[str],
        anomalygpt_path: str | PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float16,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: AnomalyGPTConfig | None = None,
    ) -> AnomalyGPT:
        """The released model from the files a user brings, loaded strictly.

        Each tensor is read once from its (memory-mapped, `weights_only`) file and copied into
        storage already on `device` in `dtype`; no whole-model copy is made on the CPU.
        Order: ImageBind vision+text, the LM, the PandaGPT delta (`llama_proj` + LoRA), the
        AnomalyGPT delta (decoder, prompt learner, and any `llama_proj`/LoRA it overrides).

        Args:
            imagebind_path: `imagebind_huge.pth`.
            llm_dir: Hugging Face LLaMA directory (Vicuna-7B v0).
            pandagpt_path: PandaGPT delta `pytorch_model.pt`.
            anomalygpt_path: AnomalyGPT delta `pytorch_model.pt`.
            device: Target device.
            dtype: Weight dtype (maps are computed in float32 regardless).
            tokenizer: The LM's tokenizer; default `AutoTokenizer` from `llm_dir`, offline.
            config: Default `AnomalyGPTConfig.official_7b()`.

        Raises:
            ValueError: a file misses, adds or mis-shapes a tensor (each is named), or the
                LM's hidden size does not fit `config`.
        """
        from transformers import AutoConfig, AutoTokenizer

        config = config or AnomalyGPTConfig.official_7b()
        if config.lora is None:
            msg = "the PandaGPT delta holds LoRA tensors: config.lora must be set"
            raise ValueError(msg)
        lm_config = AutoConfig.from_pretrained(llm_dir, local_files_only=True)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(llm_dir, local_files_only=True)
        model = cls.empty(config, lm_config, tokenizer, device=device, dtype=dtype)
        if not isinstance(model.encoder, ImageBindEncoder):
            msg = "from_official loads ImageBind: config.imagebind must be set"
            raise ValueError(msg)
        model.encoder.load_official(read_state_dict(imagebind_path))
        load_hf_lm_weights(model.base_lm, llm_dir)
        llm = model.llm
        load_pandagpt_delta(pandagpt_path, llama_proj=llm.llama_proj, lora_target=llm.llama_model)
        load_anomalygpt_delta(
            anomalygpt_path,
            decoder=model.image_decoder,
            prompt_learner=model.prompt_learner,
            llama_proj=llm.llama_proj,
            lora_target=llm.llama_model,
        )
        return model.eval()

    @property
    def base_lm(self) -> PreTrainedModel:
        """The injected LM (its LoRA layers included, if wrapped)."""
        lm: Any = self.llm.llama_model
        return cast("PreTrainedModel", lm.get_base_model() if hasattr(lm, "get_base_model") else lm)

    @property
    def device(self) -> torch.device:
        """Where the image decoder's weights live (with the encoder's)."""
        return next(self.image_decoder.parameters()).device

    # -- deltas ----------------------------------------------------------------------------

    def save_delta(self, path: str | PathLike[str], *, dtype: torch.dtype = torch.float16,
                   with_llm: bool = True) -> None:
        """Writes the trainable parts in the official AnomalyGPT delta layout.

        Args:
            path: Destination `.pt` file.
            dtype: Tensor dtype in the file.
            with_llm: Also write `llama_proj.*` and the LoRA tensors (as a delta the reference
                trained with them does).
        """
        save_anomalygpt_delta(
            path, decoder=self.image_decoder, prompt_learner=self.prompt_learner, dtype=dtype,
            llama_proj=self.llm.llama_proj if with_llm else None,
            lora_source=self.llm.llama_model if with_llm and self.config.lora else None)

    def load_delta(self, path: str | PathLike[str]) -> LoadedDelta:
        """Loads an official-layout AnomalyGPT delta strictly (see `load_anomalygpt_delta`).

        Its `llama_proj.*` and LoRA tensors, when present, go into the LLM.

        Raises:
            CheckpointError: naming each missing, unexpected or mis-shaped tensor.
        """
        return load_anomalygpt_delta(
            path, decoder=self.image_decoder, prompt_learner=self.prompt_learner,
            llama_proj=self.llm.llama_proj,
            lora_target=self.llm.llama_model if self.config.lora else None)

    # -- maps ------------------------------------------------------------------------------

    def _text_encoder(self) -> ImageBindEncoder:
        """The encoder, when it has a text tower (zero-shot maps); else a clear error."""
        if not self.encoder.supports_text or not isinstance(self.encoder, ImageBindEncoder):
            raise no_text_encoder(getattr(self.encoder, "name", type(self.encoder).__name__))
        return self.encoder

    def class_text_features(self, class_name: str) -> Tensor:
        """[2, D] float32 state-prompt features of a class, computed once per class."""
        cached = self._text_cache.get(class_name)
        if cached is None:
            cached = text_features(self._text_encoder(), class_name)
            self._text_cache[class_name] = cached
        return cached

    @torch.no_grad()
    def encode_references(self, pixels: Tensor) -> list[Tensor]:
        """Raw taps of normal reference images, reusable across batches.

        Args:
            pixels: [K, 3, S, S] references shared by the batch, or [B, K, 3, S, S] per query.

        Returns:
            Per tap [K, 257, W] or [B, K, 257, W].
        """
        if pixels.ndim == 4:
            return self.encoder.encode_image(pixels.to(self.device)).taps
        if pixels.ndim == 5:
            batch, k = pixels.shape[:2]
            taps = self.encoder.encode_image(pixels.flatten(0, 1).to(self.device)).taps
            return [t.unflatten(0, (batch, k)) for t in taps]
        msg = f"reference pixels must be [K, 3, S, S] or [B, K, 3, S, S], got {tuple(pixels.shape)}"
        raise ValueError(msg)

    def _maps(
        self, taps: list[Tensor], class_names: list[str], references: References | None
    ) -> Tensor:
        """[B, 224, 224] float32: few-shot when references are given, else zero-shot."""
        if references is not None:
            reference_taps = (
                self.encode_references(references)
                if isinstance(references, Tensor)
                else list(references)
            )
            return self.map_with_references(taps, reference_taps)
        names = set(class_names)
        if len(names) == 1:  # one [2, D] for the whole batch
            text = self.class_text_features(class_names[0])
        else:
            text = torch.stack([self.class_text_features(name) for name in class_names])
        return self.image_decoder.zero_shot_map(taps, text, MAP_SIZE).map

    def map_with_references(self, taps: Sequence[Tensor],
                            reference_taps: Sequence[Tensor]) -> Tensor:
        """The map of queries given references, per `config.map_mode`.

        Args:
            taps: Query taps, each [B, 1 + N, W].
            reference_taps: Per tap [K, 1 + N, W] (shared) or [B, K, 1 + N, W].

        Returns:
            [B, 224, 224] float32: the few-shot map ("replace"), or its mean with the
            decoder's learned-state map ("average").
        """
        few_shot = reference_map(taps, reference_taps, MAP_SIZE)
        if not self.averages_maps:
            return few_shot
        return self.combine_maps(self.image_decoder.learned_map(taps, MAP_SIZE).map, few_shot)

    def prompt_map(self, maps: Tensor, scale: Tensor | float | None) -> Tensor:
        """What the prompt learner reads.

        `maps` [B, 224, 224] as they are, or divided by `scale` ([B] or one value) when
        `config.prompt_map` is "calibrated", capped at `PROMPT_MAP_CAP` (a part whose
        references are nearly flat has a tiny threshold; a million times it says no more than
        four times).

        Raises:
            ValueError: a calibrated prompt map without a scale.
        """
        if self.config.prompt_map == "raw":
            return maps
        if self.config.prompt_map == "scored":  # already in score units (`prompt_inputs`)
            floor = self.config.prompt_floor
            return ((maps - floor) / (1.0 - floor)).clamp(min=0.0, max=PROMPT_MAP_CAP)
        if scale is None:
            msg = ("this model reads calibrated maps: give map_scale (the product's "
                   "calibrated map threshold, AnomalyGPTDetector.set_references)")
            raise ValueError(msg)
        scale_t = torch.as_tensor(scale, dtype=maps.dtype, device=maps.device)
        return (maps / scale_t.reshape(-1, 1, 1)).clamp(max=PROMPT_MAP_CAP)

    @property
    def averages_maps(self) -> bool:
        """Whether the decoder's learned map joins the few-shot map (`map_mode` "average")."""
        return self.config.map_mode == "average" and self.image_decoder.states is not None

    def combine_maps(self, decoder_map: Tensor, few_shot: Tensor) -> Tensor:
        """The prompt learner's map from the decoder's and the few-shot map.

        Both [B, 224, 224]: their mean in "average" mode, else the few-shot map (it replaces).
        """
        return (decoder_map + few_shot) / 2 if self.averages_maps else few_shot

    @torch.no_grad()
    def anomaly_maps(
        self,
        pixels: Tensor,
        *,
        class_names: str | Sequence[str] | None = None,
        references: References | None = None,
    ) -> Tensor:
        """Anomaly maps of a batch (inference: no gradients).

        Args:
            pixels: [B, 3, 224, 224], normalised with `encoder.mean`/`std` (CLIP for ImageBind).
            class_names: One per image, or one for all; needed for the zero-shot map.
            references: Normal references of the product, as pixels ([K, 3, S, S] shared,
                [B, K, 3, S, S] per image) or as `encode_references` taps. When given, the
                few-shot map replaces the zero-shot one.

        Returns:
            [B, 224, 224] float32 on the model's device; abnormal probability (zero-shot) or
            1 − max cosine similarity to the references (few-shot).
        """
        if references is None:
            self._text_encoder()  # a vision-only encoder has no zero-shot map
        if class_names is None and references is None:
            msg = "class_names are needed for the zero-shot map (or give references)"
            raise ValueError(msg)
        features = self.encoder.encode_image(pixels.to(self.device))
        names = _names(class_names, len(pixels))
        return self._maps(features.taps, names, references)

    # -- LLM -------------------------------------------------------------------------------

    @torch.no_grad()
    def prompt_inputs(
        self,
        pixels: Tensor,
        class_names: str | Sequence[str] | None,
        references: References | None = None,
        *,
        expected: Sequence[str | None] | None = None,
        conversations: Sequence[Conversation] | None = None,
        map_scale: Tensor | float | None = None,
        maps: Tensor | None = None,
        prompt_maps: Tensor | None = None,
    ) -> PromptInputs:
        """Encodes a batch into the LLM's inputs (the work before the prefill).

        Args:
            pixels: [B, 3, 224, 224], normalised with `encoder.mean`/`std` (CLIP for ImageBind).
            class_names: One per image or one for all; None means "object" (then give
                references, or accept a map from generic state prompts).
            references: See `anomaly_maps`.
            expected: Normal appearance per image for the inspection question ("round").
            conversations: Dialogues to continue instead of the inspection question.
            map_scale: The product's calibrated map threshold (models with calibrated prompt
                maps; `AnomalyGPTDetector` passes it).
            maps: [B, 224, 224] maps computed elsewhere (a few-shot detector's, see
                `AnomalyGPTDetector`'s ``evidence``); then `references` are not used.
            prompt_maps: [B, 224, 224] what a "scored" model's prompt learner reads (the
                evidence detector's `score_maps` of `maps`); `maps` stay the served maps.

        Raises:
            ValueError: maps of the wrong shape; a "scored" model without `prompt_maps`.
        """
        batch = len(pixels)
        names = _names(class_names, batch)
        features = self.encoder.encode_image(pixels.to(self.device))
        if maps is None:
            maps = self._maps(features.taps, names, references)
        elif tuple(maps.shape) != (batch, MAP_SIZE, MAP_SIZE):
            msg = f"maps must be [{batch}, {MAP_SIZE}, {MAP_SIZE}], got {tuple(maps.shape)}"
            raise ValueError(msg)
        maps = maps.to(self.device, torch.float32)
        if self.config.prompt_map == "scored":
            if prompt_maps is None or tuple(prompt_maps.shape) != tuple(maps.shape):
                msg = ("this model reads maps in score units: give prompt_maps shaped as maps "
                       "(FewShotDetector.score_maps; AnomalyGPTDetector with evidence does)")
                raise ValueError(msg)
            read = self.prompt_map(prompt_maps.to(self.device, torch.float32), None)
        else:
            read = self.prompt_map(maps, map_scale)
        prompts = self.prompt_learner(read.unsqueeze(1))  # [B, 18, H]
        if conversations is None:
            wanted = list(expected) if expected is not None else [None] * batch
            if len(wanted) != batch:
                msg = f"{len(wanted)} expected appearances for {batch} images"
                raise ValueError(msg)
            conversations = [
                Conversation.start(query_text(name.replace("_", " "), appearance))
                for name, appearance in zip(names, wanted, strict=True)
            ]
        elif len(conversations) != batch:
            msg = f"{len(conversations)} conversations for {batch} images"
            raise ValueError(msg)
        return PromptInputs(list(conversations), features.global_embedding, prompts, maps)

    @torch.no_grad()
    def verdicts(
        self,
        pixels: Tensor,
        class_names: str | Sequence[str] | None,
        references: References | None = None,
        *,
        expected: Sequence[str | None] | None = None,
        explain: Explain = "anomalous",
        max_new_tokens: int = 64,
        map_scale: Tensor | float | None = None,
        maps: Tensor | None = None,
        prompt_maps: Tensor | None = None,
    ) -> list[Verdict]:
        """Inspects a batch: one prefill for every verdict, then answers where wanted.

        Args:
            pixels: [B, 3, 224, 224], normalised with `encoder.mean`/`std` (CLIP for ImageBind).
            class_names: One per image or one for all.
            references: Normal references (few-shot); see `anomaly_maps`.
            expected: Normal appearance per image for the question.
            explain: Which rows generate their answer sentence: "anomalous" (P(yes) > 0.5),
                "all" or "none". Other rows get "No, there is no anomaly in the image." when
                normal, "Yes, there is an anomaly in the image." when anomalous.
            max_new_tokens: Answer length limit.
            map_scale: See `prompt_inputs`.
            maps: See `prompt_inputs`.
            prompt_maps: See `prompt_inputs`.

        Returns:
            One `Verdict` per image, in order.
        """
        inputs = self.prompt_inputs(pixels, class_names, references, expected=expected,
                                    map_scale=map_scale, maps=maps, prompt_maps=prompt_maps)
        verdict = self.llm.verdict_logits(
            inputs.conversations, inputs.image_embeds, inputs.prompt_embeds
        )
        anomalous = verdict.anomalous.tolist()
        if explain == "anomalous":
            rows = [i for i, yes in enumerate(anomalous) if yes]
        elif explain in ("all", "none"):
            rows = list(range(len(anomalous))) if explain == "all" else []
        else:
            msg = f"explain must be 'anomalous', 'all' or 'none', got {explain!r}"
            raise ValueError(msg)
        texts = [YES_PLAIN if yes else NO_ANOMALY for yes in anomalous]
        if rows:
            index = torch.tensor(rows, device=inputs.prompt_embeds.device)
            answers = self.llm.generate(
                [inputs.conversations[i] for i in rows],
                inputs.image_embeds[index],
                inputs.prompt_embeds[index],
                max_new_tokens=max_new_tokens,
            )
            for i, text in zip(rows, answers, strict=True):
                texts[i] = text
        maps = inputs.maps.float()
        scores = maps.flatten(1).amax(dim=1).tolist()
        if maps.is_cuda:  # one copy into page-locked memory (a pageable copy is ~10x slower)
            host = torch.empty(maps.shape, dtype=maps.dtype, pin_memory=True)
            maps = host.copy_(maps)
        probabilities = verdict.probability.float().cpu().tolist()
        return [
            Verdict(
                anomalous=bool(anomalous[i]),
                probability=float(probabilities[i]),
                score=float(scores[i]),
                anomaly_map=maps[i],
                positions=parse_answer(texts[i]).positions,
                text=texts[i],
            )
            for i in range(len(anomalous))
        ]

    @torch.no_grad()
    def chat(
        self,
        conversation: Conversation,
        pixels: Tensor,
        *,
        class_name: str = DEFAULT_CLASS,
        references: References | None = None,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        streamer: Any = None,
        map_scale: Tensor | float | None = None,
        maps: Tensor | None = None,
        prompt_maps: Tensor | None = None,
    ) -> str:
        """Answers the pending question of a dialogue about one image and records the answer.

        Args:
            conversation: Ends with an unanswered question (`Conversation.start`/`ask`).
            pixels: [3, 224, 224] or [1, 3, 224, 224], normalised like `anomaly_maps`'s.
            class_name: For the zero-shot map ("object" as in the reference web demo).
            references: Normal references of the product (few-shot map), see `anomaly_maps`.
            max_new_tokens: Longest answer in tokens.
            do_sample: Sample instead of greedy decoding.
            temperature: Sampling temperature.
            top_p: Nucleus sampling mass.
            streamer: Receives the new tokens as they are generated (transformers streamer).
            map_scale: See `prompt_inputs`.
            maps: [1, 224, 224], see `prompt_inputs`.
            prompt_maps: [1, 224, 224], see `prompt_inputs`.

        Returns:
            The answer, also appended to `conversation`.
        """
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(0)
        if pixels.shape[0] != 1:
            msg = f"chat takes one image, got a batch of {pixels.shape[0]}"
            raise ValueError(msg)
        inputs = self.prompt_inputs(pixels, class_name, references, conversations=[conversation],
                                    map_scale=map_scale, maps=maps, prompt_maps=prompt_maps)
        (answer,) = self.llm.generate(
            inputs.conversations,
            inputs.image_embeds,
            inputs.prompt_embeds,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            streamer=streamer,
        )
        conversation.add_answer(answer)
        return answer


def _names(class_names: str | Sequence[str] | None, batch: int) -> list[str]:
    if class_names is None:
        return [DEFAULT_CLASS] * batch
    if isinstance(class_names, str):
        return [class_names] * batch
    names = list(class_names)
    if len(names) != batch:
        msg = f"{len(names)} class names for {batch} images"
        raise ValueError(msg)
    return names
