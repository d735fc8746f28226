"""`agpt chat` and `agpt model check`: the model-facing commands of the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from agpt import wiring
from agpt.errors import UsageError
from agpt.settings import Settings


def run_model_check(args: argparse.Namespace) -> int:
    """Validate official checkpoint files without building the model (exit 1 on problems)."""
    from inference.model.weights.checkpoint_check import check_checkpoints

    files = {k: getattr(args, k) for k in ("imagebind", "llm", "pandagpt", "anomalygpt")}
    if not any(files.values()):
        msg = "give at least one of --imagebind --llm --pandagpt --anomalygpt"
        raise UsageError(msg)
    absent = [f"--{k} {v}" for k, v in files.items() if v and not Path(v).exists()]
    if absent:
        msg = f"no such file or directory: {', '.join(absent)}"
        raise UsageError(msg)
    report = check_checkpoints(**files)
    print(report.format())
    return 0 if report.ok else 1


def run_chat(settings: Settings, args: argparse.Namespace, *, read=input) -> int:
    """A multi-turn dialogue about one image in the terminal.

    Questions come from ``--ask`` (repeatable, non-interactive) or, without it, from the
    prompt until an empty line or end of input.
    """
    from inference.chat import AnomalyGPTChat, GroundedChat
    from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector
    from inference.model.weights.smollm import load_smollm2
    from ingest.sources import image_files

    wiring.configure_logging("WARNING")
    wiring.configure_torch(settings)
    refs_dir = Path(args.refs)
    if not refs_dir.is_dir():
        msg = f"--refs {args.refs}: no such directory (a folder of normal images)"
        raise UsageError(msg)
    references = [_open_image(p) for p in image_files(refs_dir)]
    if not references:
        msg = f"--refs {args.refs}: no PNG/JPEG reference images in it"
        raise UsageError(msg)
    image = _open_image(Path(args.image))
    detector = wiring.detector(settings)
    detector.set_references(args.product, references)
    detection = detector.detect(args.product, [image])[0]
    chat: GroundedChat | AnomalyGPTChat
    if isinstance(detector, AnomalyGPTDetector):  # the LLM sees the image itself
        chat = AnomalyGPTChat(detector, product=args.product, image=image, detection=detection)
    else:  # the CPU profiles: SmolLM2 continues from the verdict as text
        lm, tokenizer = load_smollm2(settings.cache_dir)
        chat = GroundedChat(lm, tokenizer, product=args.product, detection=detection)
    questions = list(args.ask or [])
    first = True
    while True:
        if questions:
            question = questions.pop(0)
        elif args.ask:
            break
        else:
            try:
                question = read("you> " if not first else "you> (Enter = inspection question) ")
            except EOFError:
                break
            if not question and not first:
                break
        answer = chat.ask(question or None)
        print(f"agpt> {answer.text}")
        if answer.first_token_s is not None:
            rate = answer.tokens_per_s
            print(f"      [first token {answer.first_token_s:.2f} s, {answer.tokens} tokens, "
                  f"{rate:.1f} tokens/s]" if rate else
                  f"      [first token {answer.first_token_s:.2f} s, {answer.tokens} tokens]")
        first = False
    return 0


def _open_image(path: Path) -> Image.Image:
    """The RGB image at ``path``.

    Raises:
        UsageError: The file is missing or not an image.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as exc:
        msg = f"{path}: no such file"
        raise UsageError(msg) from exc
    except OSError as exc:  # UnidentifiedImageError included
        msg = f"{path}: not a readable image"
        raise UsageError(msg) from exc
