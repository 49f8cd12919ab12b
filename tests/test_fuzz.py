"""Property-based fuzz (hypothesis) of bad input: the training config space and the flags of
scripts/train.py, scripts/study.py and scripts/measure.py, called in process (their ``main``).

Every case is invalid by construction, so each must end in exit code 2 with one ``error:`` line
on stderr, no traceback, and nothing written. ``validate_config`` over the whole config space (valid
values too) raises nothing but a one-line ``UserError``.
"""

import contextlib
import io
import itertools
import math
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from snnjax import models
from snnjax.errors import UserError
from snnjax.studies import commands
from snnjax.train import cli, config_io
from tests._train_configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DENSE = ["--config", os.path.join(REPO, "configs", "dense.py:quick"), "--config.progress=False"]
STUDY = ["--config", os.path.join(REPO, "configs", "study.py:quick")]


def fuzz(max_examples):
  """Reproducible (derandomized, no example database written) and without time limits."""
  return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate])  # a failure is reported unshrunk


_counter = itertools.count()

text = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=0, max_size=12)
non_finite = st.sampled_from([math.inf, -math.inf, math.nan])
negative_int = st.integers(max_value=-1)
not_positive_int = st.integers(max_value=0)
huge_int = st.integers(min_value=2**31, max_value=10**30)


def _invalid_float(valid):
  """Floats (finite, huge, inf, nan) for which ``valid`` is False."""
  return st.one_of(st.floats(allow_nan=False, allow_infinity=False), non_finite).filter(
      lambda v: not valid(v))


def _word(valid):
  return text.filter(lambda s: s.strip() not in valid and s not in valid)


def _not_a_number(kind):
  """Text an int (or float) field's parser must refuse."""
  def bad(s):
    try:
      kind(s)
      return False
    except ValueError:
      return True
  return text.filter(lambda s: s.strip() != "" and bad(s))


def _fmt(v):
  return repr(v) if isinstance(v, float) else str(v)


# Each field of a dense quick config with values that are invalid there.
BAD_TRAIN = {
    "seed": st.one_of(negative_int, huge_int, _not_a_number(int)),
    "num_epochs": st.one_of(not_positive_int, st.integers(min_value=100_001), _not_a_number(int)),
    "batch_size": st.one_of(not_positive_int, _not_a_number(int)),
    "eval_batch_size": not_positive_int,
    "eval_every_epochs": not_positive_int,
    "checkpoint_every_epochs": not_positive_int,
    "checkpoint_keep": not_positive_int,
    "train_eval_size": negative_int,
    "num_devices": st.one_of(negative_int, st.integers(min_value=10_000, max_value=2**31 - 1)),
    "sparsity": st.floats().filter(lambda v: v != 0.0).map(_fmt),  # a dense config: only 0 is valid
    "optim.lr": st.one_of(_invalid_float(lambda v: 0.0 < v <= config_io.MAX_LR),
                          _not_a_number(float)),
    "optim.momentum": _invalid_float(lambda v: 0.0 <= v < 1.0),
    "optim.weight_decay": _invalid_float(lambda v: 0.0 <= v < 1.0),
    "optim.decay": _invalid_float(lambda v: 0.0 < v <= 1.0),
    "optim.warmup_epochs": _invalid_float(lambda v: 0.0 <= v <= config_io.MAX_EPOCHS),
    "optim.boundaries_epochs": st.one_of(
        st.tuples(st.floats(min_value=config_io.MAX_EPOCHS + 1, allow_infinity=False)),
        st.tuples(st.integers(max_value=-1)), st.just(("'a'",))).map(
            lambda t: "(" + ",".join(_fmt(v) for v in t) + ",)"),
    "fisher_reg.weight": _invalid_float(lambda v: 0.0 <= v <= config_io.MAX_FISHER_WEIGHT),
    "dataset.label_noise": _invalid_float(lambda v: 0.0 <= v < 1.0),
    "dataset.imbalance_ratio": st.floats(max_value=1.0, exclude_max=True),
    "regime": _word(config_io.REGIMES),
    "dataset.name": _word(config_io.DATASETS),
    "model.name": _word(models.model_names()),
    "precision": _word(("float32", "bfloat16")),
    "nan_policy": _word(config_io.NAN_POLICIES),
    "mask.scope": _word(("global", "layerwise")),
    "prerequisites": _word(("error", "train")),
    "curriculum.kind": _word(("none",)),
    "unknown_field": text,
}


def _main(fn, argv):
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    rc = fn(argv)
  return rc, err.getvalue()


def _assert_refused(rc, err, written):
  lines = [l for l in err.splitlines() if l.strip()]
  assert rc == 2, err
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert "Traceback" not in err
  assert not os.path.exists(written), written


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("fuzz")


@given(st.data())
@fuzz(200)
def test_train_cli_refuses_every_bad_override(root, data):
  fields = data.draw(st.lists(st.sampled_from(sorted(BAD_TRAIN)), min_size=1, max_size=3,
                              unique=True))
  overrides = [f"--config.{f}={_fmt(data.draw(BAD_TRAIN[f]))}" for f in fields]
  extra = data.draw(st.sampled_from([[], ["stray"], ["--bogus_flag"], ["--config.optim.nesterov"]]))
  workdir = str(root / f"train{next(_counter)}")
  argv = ["train.py"] + DENSE + data.draw(st.permutations(overrides + extra)) + ["--workdir",
                                                                               workdir]
  rc, err = _main(cli.main, argv)
  _assert_refused(rc, err, workdir)


@given(field=st.sampled_from(sorted(set(BAD_TRAIN) - {"unknown_field"})),
       value=st.one_of(text, st.integers(), st.floats(), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=2)))
@fuzz(300)
def test_validate_config_raises_only_one_line_user_errors(field, value):
  d = config_io.config_to_dict(tiny())  # as a config.json would give it: any JSON value
  node = d
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  config = config_io.config_from_dict(d)
  try:
    config_io.validate_config(config, models.model_names())
  except UserError as e:
    assert "\n" not in str(e) and str(e)
  # Any other exception fails the test.


BAD_STUDY = {
    "seeds": st.one_of(st.tuples(negative_int), st.just(())).map(
        lambda t: "(" + ",".join(map(str, t)) + ("," if t else "") + ")"),
    "bogus": text,
    "measure.fisher.kind": _word(("exact", "mc", "empirical")),
}


@given(st.data())
@fuzz(60)
def test_study_cli_refuses_bad_flags(root, data):
  workdir = str(root / f"study{next(_counter)}")
  kind = data.draw(st.sampled_from(["field", "stage", "stray", "config"]))
  if kind == "field":
    field = data.draw(st.sampled_from(sorted(BAD_STUDY)))
    args = STUDY + [f"--config.{field}={data.draw(BAD_STUDY[field])}"]
  elif kind == "stage":
    args = STUDY + [f"--stages={data.draw(text.filter(lambda s: s.strip() and ',' not in s))}x"]
  elif kind == "stray":
    args = STUDY + [data.draw(text.filter(lambda s: s and not s.startswith("-")))]
  else:  # the wrong kind of config, or a missing one
    args = data.draw(st.sampled_from([DENSE, ["--config", "missing.py"], []]))
  rc, err = _main(commands.study_main, ["study.py"] + args + ["--workdir", workdir, "--dry_run"])
  _assert_refused(rc, err, workdir)


@given(st.data())
@fuzz(60)
def test_measure_cli_refuses_bad_flags(root, data):
  out = str(root / f"measure{next(_counter)}")
  kind = data.draw(st.sampled_from(["setting", "value", "stray", "workdir", "out"]))
  args = ["--workdir", str(root), "--out", out]
  if kind == "setting":
    args += [f"--config.{data.draw(text.filter(lambda s: s.isidentifier()))}_x=1"]
  elif kind == "value":
    args += [f"--config.fisher.kind={data.draw(_word(('exact', 'mc', 'empirical')))}"]
  elif kind == "stray":
    args += [data.draw(text.filter(lambda s: s and not s.startswith("-")))]
  elif kind == "workdir":
    args = ["--workdir", str(root / "absent" / data.draw(text.filter(lambda s: "/" not in s))),
            "--out", out]
  else:
    (root / "a_file").write_text("")
    args = ["--workdir", str(root), "--out", str(root / "a_file" / "m")]
    out = str(root / "a_file" / "m.md")
  rc, err = _main(commands.measure_main, ["measure.py"] + args)
  _assert_refused(rc, err, out + ".md" if not out.endswith(".md") else out)


# ----------------------------------------------------------------- the study's nested fields


def _numeric_fields(node, prefix=""):
  """Dotted names of every number (int or float, not bool) in a ConfigDict, nested."""
  out = []
  for key, value in node.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      out += _numeric_fields(value, name + ".")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      out.append(name)
  return out


def _quick_study():
  return config_io.load_config_spec(os.path.join(REPO, "configs", "study.py") + ":quick")


STUDY_NUMBERS = _numeric_fields(_quick_study())
MEASURE_NUMBERS = _numeric_fields(_quick_study().measure)
# 20-digit integers (both signs), NaN and inf: refused in every numeric field.
RUNAWAY = st.one_of(st.integers(min_value=10**19, max_value=10**20 - 1),
                    st.integers(min_value=-(10**20 - 1), max_value=-(10**19)), non_finite)
TRAIN_SLOTS = [f"{family}_{regime}" for family in ("clean", "noisy")
               for regime in ("dense", "finetune", "scratch", "rigl")]
SPECS = ["dense.py", "finetune95.py", "scratch95.py", "rigl95.py", "study.py", "missing.py"]


def _set(config, field, value):
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value


def _study_validate(config):
  from snnjax.studies import study as study_lib  # pylint: disable=import-outside-toplevel
  study_lib.validate(config)


@given(field=st.sampled_from(STUDY_NUMBERS), value=RUNAWAY)
@fuzz(60)
def test_study_refuses_runaway_numbers_in_every_numeric_field(field, value):
  """Every numeric field of the study, its own and every stage's (``measure.*``, ``sanity.*``,
  ``closing_gap.scores.*``, ...): a 20-digit integer, NaN or inf is a one-line UserError."""
  config = _quick_study()
  _set(config, field, value)
  with pytest.raises(UserError) as e:
    _study_validate(config)
  assert "\n" not in str(e.value) and field.split(".")[-1] in str(e.value)


@given(field=st.sampled_from(STUDY_NUMBERS),
       value=st.one_of(text, st.integers(), st.floats(), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=2)))
@fuzz(80)
def test_study_validate_raises_only_one_line_user_errors(field, value):
  config = _quick_study()
  _set(config, field, value)
  try:
    _study_validate(config)
  except UserError as e:
    assert "\n" not in str(e) and str(e)


@given(slot=st.sampled_from(TRAIN_SLOTS),
       spec=st.one_of(st.tuples(st.sampled_from(SPECS),
                                st.sampled_from(["", ":quick", ":noisy", ":quick_noisy", ":bogus"])
                                ).map("".join), text))
@fuzz(25)
def test_study_train_slots_take_only_their_regimes_config(slot, spec):
  """``train.*``: a spec of another regime, a missing file or preset, garbage: one-line errors;
  a slot's own regime's config passes."""
  config = _quick_study()
  config.train[slot] = spec
  regime = slot.split("_", 1)[1]
  try:
    _study_validate(config)
  except UserError as e:
    assert "\n" not in str(e) and str(e)
    return
  assert os.path.basename(spec.partition(":")[0]).startswith("dense" if regime == "dense"
                                                             else regime)


@given(field=st.sampled_from(MEASURE_NUMBERS), value=RUNAWAY)
@fuzz(60)
def test_measure_refuses_runaway_numbers_in_every_numeric_setting(field, value):
  with pytest.raises(UserError) as e:
    commands.measure_settings(None, [f"--config.{field}={_fmt(value)}"])
  assert "\n" not in str(e.value)
