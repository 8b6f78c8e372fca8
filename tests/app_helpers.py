"""Helpers for the app tests: tiny random models saved the way the app loads them."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "app_pages"


def make_model(path: Path, seed: int = 0, size: str = "tiny", strategy: str | None = None) -> Path:
    """A randomly initialised MidiBert (``size``) saved with its tokenizer config
    (and, if given, the name of the strategy it was pre-trained with)."""
    import torch

    from smu_explain.model import MidiBert, ModelConfig
    from smu_explain.tokenizer import Tokenizer, TokenizerConfig

    torch.manual_seed(seed)
    tok = Tokenizer(TokenizerConfig())
    model = MidiBert(ModelConfig.named(size, tok.vocab_sizes, tok.attributes))
    extra = {"tokenizer": tok.config.to_dict()}
    if strategy:
        extra["strategy"] = {"name": strategy}
    model.save_pretrained(path, extra=extra)
    return Path(path)


def page(name: str) -> str:
    return str(PAGES / name)


def texts(at) -> str:
    """Every markdown, caption, info, warning, error and success text of an AppTest run."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)
