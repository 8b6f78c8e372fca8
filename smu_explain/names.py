"""The name lists every layer shares, written once. Torch-free (plain tuples, no imports).

The CLI's parsers (``smu --help`` must not import torch), the run registry, the app pages,
the benches and the torch modules all read these; nowhere else spells a list out. The
modules that attach meaning to a name keep it next to its implementation and are checked
against these lists (tests/test_names.py):

- ``STRATEGIES``: the masking strategies, ``masker.make_strategy`` (each class's ``name``).
- ``SIZES``: the named model sizes, the keys of ``model.ModelConfig.SIZES``.
- ``FINETUNE_TASKS``: the fine-tuning tasks, the keys of ``heads.TASKS``.
- ``TASKS``: what ``smu tokenize`` / ``corpora.build_task`` read: pre-training plus the
  fine-tuning tasks (``corpora.TASKS``).
- ``SPLIT_SCHEMES``: the split schemes ``--split`` offers (``ours``, MidiBERT's lists,
  EMOPIA's own split; ``corpora`` says which dataset has which).
"""

STRATEGIES = ("random", "adversarial", "bar")
SIZES = ("tiny", "small", "base")
FINETUNE_TASKS = ("melody", "velocity", "composer", "emotion", "folder")
TASKS = ("pretrain",) + FINETUNE_TASKS
SPLIT_SCHEMES = ("ours", "midibert", "emopia")
