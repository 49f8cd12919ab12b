"""Every ```python block of README.md runs (in order, in one namespace).

The blocks that load a trained run ("runs/scratch95-quick") run against a tiny dense run this
test trains (an MLP on the embedded mnist1d data, one epoch: seconds); everything else runs as
written. Blocks in other languages (bash) are not run.
"""

import os
import re

import pytest

import _train_configs
from snnjax.train import train_and_evaluate

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
RUN_PATH = '"runs/scratch95-quick"'


def _python_blocks():
  with open(README, encoding="utf-8") as f:
    text = f.read()
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_blocks_that_load_a_run():
  blocks = _python_blocks()
  assert len(blocks) >= 3 and RUN_PATH in blocks[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_python_block_of_the_readme_runs(tmp_path):
  workdir = str(tmp_path / "run")
  config = _train_configs.tiny("dense", epochs=1, hidden_sizes=(16,))
  train_and_evaluate(config, workdir)
  namespace: dict = {"__name__": "readme"}
  for i, block in enumerate(_python_blocks()):
    code = block.replace(RUN_PATH, repr(workdir))
    try:
      exec(compile(code, f"README.md python block {i}", "exec"), namespace)  # noqa: S102
    except Exception as e:  # pragma: no cover - the message names the block
      raise AssertionError(f"README python block {i} failed: {type(e).__name__}: {e}") from e
