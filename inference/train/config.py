"""The `agpt train --config FILE` file (TOML or YAML) and what it builds.

```toml
[model]
profile = "cpu-small"      # or "anomalygpt-7b" (official files from the AGPT_* settings)
init_seed = 0              # the fresh decoder / prompt learner / llama_proj / LoRA
evidence = "cpu-small"     # cpu-small only: the prompt learner reads this profile's few-shot
                           # map in threshold units, as served (needs [simulation] shots)
readable_prompts = true    # cpu-small only: the prompt learner starts at the scale of the LLM's
                           # word embeddings (PromptLearner.init_readable)

[data]                     # any mix; paths relative to the config file
wheel_images = true        # scikit-image's photos (true = all but the evaluation's sources)
textures = true            # procedural stochastic textures (true = every family of textures.py)
mvtec = ["/data/mvtec"]    # also MVTec LOCO AD (same train/good layout)
visa = [{ root = "/data/visa", split_csv = "/data/visa/split_csv/1cls.csv" }]
crackforest = ["/data/CrackForest"]
folders = ["/data/my_product"]            # <product>/good/*.png
conversations = [{ json = "/data/pandagpt4_visual_instruction_data.json",
                   images = "/data/images" }]

[simulation]
seed = 0
anomaly_ratio = 0.5
kinds = ["nsa", "cutpaste", "scar", "texture"]
shots = [1, 4]             # pools of references per product part (datasets.Pool); [] = none
pools_per_product = 2

[train]                    # see trainer.TrainSettings
steps = 200
batch_size = 4

[output]
dir = "var/train"          # checkpoints and loss_log.csv
delta = "var/train/delta.safetensors"   # the final delta (float16)
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .datasets import (
    WHEEL_IMAGES,
    Conversation,
    Product,
    crackforest_products,
    folder_products,
    load_conversations,
    mvtec_products,
    texture_products,
    visa_products,
    wheel_products,
)
from .simulation import KINDS
from .trainer import TrainSettings

__all__ = ["ConfigError", "TrainConfig", "load_config"]

PROFILES = ("cpu-small", "anomalygpt-7b")


class ConfigError(ValueError):
    """The config file is unreadable or names something unknown."""


@dataclass(frozen=True)
class TrainConfig:
    """A parsed training config (paths resolved against the file's folder)."""

    profile: str
    init_seed: int
    products: list[Product]
    conversations: list[Conversation]
    seed: int
    anomaly_ratio: float
    kinds: tuple[str, ...]
    real_ratio: float
    train: TrainSettings
    out_dir: Path
    delta: Path
    sources: list[str] = field(default_factory=list)  # what the products came from (log)
    evidence: str | None = None  # few-shot profile whose calibrated map the prompts read
    readable_prompts: bool = False  # PromptLearner.init_readable at the LLM's embedding norm
    shots: tuple[int, ...] = ()
    pools_per_product: int = 2


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        msg = f"cannot read {path}: {err.strerror}"
        raise ConfigError(msg) from err
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as err:
        msg = f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'TOML'}: {err}"
        raise ConfigError(msg) from err
    except Exception as err:  # yaml.YAMLError has no common base with ValueError
        msg = f"{path}: not valid YAML: {err}"
        raise ConfigError(msg) from err
    if not isinstance(data, dict):
        msg = f"{path}: expected tables [model], [data], [simulation], [train], [output]"
        raise ConfigError(msg)
    return data


def _table(data: dict[str, Any], name: str, known: set[str]) -> dict[str, Any]:
    table = data.get(name) or {}
    if not isinstance(table, dict):
        msg = f"[{name}] must be a table"
        raise ConfigError(msg)
    unknown = sorted(set(table) - known)
    if unknown:
        msg = f"[{name}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        raise ConfigError(msg)
    return table


def load_config(path: Path) -> TrainConfig:
    """Reads and checks a training config (TOML, or YAML for .yaml/.yml).

    Raises:
        ConfigError: unreadable, unknown keys or values, data roots that do not fit.
    """
    path = Path(path).resolve()
    data = _read(path)
    unknown = sorted(set(data) - {"model", "data", "simulation", "train", "output"})
    if unknown:
        msg = f"{path}: unknown table(s) {', '.join(unknown)}"
        raise ConfigError(msg)
    base = path.parent

    def resolve(value: Any) -> Path:
        candidate = Path(str(value)).expanduser()
        return candidate if candidate.is_absolute() else (base / candidate).resolve()

    model = _table(data, "model", {"profile", "init_seed", "evidence", "readable_prompts"})
    profile = str(model.get("profile", "cpu-small"))
    if profile not in PROFILES:
        msg = f"[model] profile {profile!r}; trainable: {', '.join(PROFILES)}"
        raise ConfigError(msg)

    spec = _table(data, "data", {"wheel_images", "textures", "mvtec", "loco", "visa",
                                 "crackforest", "folders", "conversations"})
    products: list[Product] = []
    sources: list[str] = []
    conversations: list[Conversation] = []
    try:
        wheel = spec.get("wheel_images", False)
        if wheel:
            names = WHEEL_IMAGES if wheel is True else tuple(wheel)
            products += wheel_products(names)
            sources += [f"skimage:{n}" for n in names]
        families = spec.get("textures", False)
        if families:
            found = texture_products() if families is True else texture_products(families)
            products += found
            sources += [f"procedural:{p.name.removesuffix(' texture')}" for p in found]
        for key in ("mvtec", "loco"):
            for root in spec.get(key, []):
                products += mvtec_products(resolve(root))
                sources.append(f"{key}:{resolve(root)}")
        for item in spec.get("visa", []):
            item = item if isinstance(item, dict) else {"root": item}
            csv_path = resolve(item["split_csv"]) if item.get("split_csv") else None
            products += visa_products(resolve(item["root"]), csv_path)
            sources.append(f"visa:{resolve(item['root'])}")
        for root in spec.get("crackforest", []):
            products += crackforest_products(resolve(root))
            sources.append(f"crackforest:{resolve(root)}")
        for root in spec.get("folders", []):
            products += folder_products(resolve(root))
            sources.append(f"folder:{resolve(root)}")
        for item in spec.get("conversations", []):
            conversations += load_conversations(resolve(item["json"]), resolve(item["images"]))
    except (KeyError, TypeError) as err:
        msg = f"[data]: malformed entry ({err})"
        raise ConfigError(msg) from err
    except ValueError as err:  # DatasetError
        raise ConfigError(str(err)) from err
    if not products:
        msg = f"{path}: [data] names no training images"
        raise ConfigError(msg)

    simulation = _table(data, "simulation", {"seed", "anomaly_ratio", "kinds", "real_ratio",
                                             "shots", "pools_per_product"})
    shots = tuple(int(k) for k in simulation.get("shots", ()))
    evidence = model.get("evidence")
    if evidence is not None:
        if profile != "cpu-small" or evidence not in ("cpu-small", "cpu-small-448"):
            msg = (f"[model] evidence {evidence!r}: a few-shot profile (cpu-small) for the "
                   f"cpu-small composition")
            raise ConfigError(msg)
        if not shots:
            msg = "[model] evidence needs pools: [simulation] shots = [1, ...]"
            raise ConfigError(msg)
    if model.get("readable_prompts") and profile != "cpu-small":
        msg = "[model] readable_prompts: cpu-small only (the released delta has its prompt learner)"
        raise ConfigError(msg)
    if any(k < 1 for k in shots):
        msg = f"[simulation] shots {list(shots)} must be >= 1"
        raise ConfigError(msg)
    kinds = tuple(simulation.get("kinds", KINDS))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        msg = f"[simulation] kinds {bad}; known: {', '.join(KINDS)}"
        raise ConfigError(msg)

    known = {f.name for f in fields(TrainSettings)}
    train = _table(data, "train", known)
    try:
        settings = TrainSettings(**train)
    except TypeError as err:
        msg_0 = f"[train]: {err}"
        raise ConfigError(msg_0) from err
    output = _table(data, "output", {"dir", "delta"})
    out_dir = resolve(output.get("dir", "var/train"))
    return TrainConfig(
        profile=profile,
        init_seed=int(model.get("init_seed", 0)),
        products=products,
        conversations=conversations,
        seed=int(simulation.get("seed", 0)),
        anomaly_ratio=float(simulation.get("anomaly_ratio", 0.5)),
        kinds=kinds,
        real_ratio=float(simulation.get("real_ratio", 0.5)),
        train=settings,
        out_dir=out_dir,
        delta=resolve(output["delta"]) if "delta" in output else out_dir / "delta.safetensors",
        sources=sources,
        evidence=str(evidence) if evidence is not None else None,
        readable_prompts=bool(model.get("readable_prompts", False)),
        shots=shots,
        pools_per_product=int(simulation.get("pools_per_product", 2)),
    )
