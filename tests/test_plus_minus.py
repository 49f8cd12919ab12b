"""Every "±" says what it covers: measure.md's columns, the protocol text, the JSON, the table."""

from snnjax.studies import commands
from snnjax.studies import measure
from snnjax.studies.stages import table


def _row(tr_f_stderr, jac_stderr):
  est = lambda v, se: {"value": v, "stderr": se}
  return {"path": "runs/x", "regime": "scratch", "sparsity": 0.9, "step": 10,
          "measurement": {"train_error": 0.1, "test_accuracy": 0.9, "tr_f": est(12.0, tr_f_stderr),
                          "tr_h": est(30.0, 2.0), "jacobian": est(5.0, jac_stderr)}}


def test_plus_minus_names_what_each_stderr_covers():
  s = measure.default_settings()  # mc Fisher, Hutchinson, exact Jacobian
  pm = measure.plus_minus(s)
  assert pm["tr_h"]["short"] == "stderr: probes" and "examples fixed" in pm["tr_h"]["words"]
  assert pm["tr_f"]["short"] == "stderr: examples + sampled labels"
  assert pm["jacobian"] is None
  line = measure.plus_minus_line(s)
  assert line in measure.describe_settings(s) and "Jacobian has no ± (exact" in line
  s.fisher.kind = "exact"
  s.hessian.method = "hutchpp"
  s.jacobian.num_projections = 4
  pm = measure.plus_minus(s)
  assert pm["tr_f"] is None and "residual" in pm["tr_h"]["words"]
  assert pm["jacobian"]["short"] == "stderr: examples + projections"


def test_measure_markdown_labels_every_column():
  s = measure.default_settings()
  text = commands._measure_markdown([_row(0.5, None)], measure.describe_settings(s), s)
  head = text.splitlines()[0]
  assert "Tr(F) ± stderr: examples + sampled labels" in head
  assert "Tr(H) ± stderr: probes" in head and "Jacobian (exact, no ±)" in head
  assert "| 12 ± 0.5 | 30 ± 2 | 5 |" in text
  assert "±: Tr(H) ± one standard error over the random probes only" in text


def test_table_cells_say_sd_or_stderr():
  assert table.cell_text({"mean": 30.0, "sd": None, "stderr": 2.0, "values": [30.0]}) == (
      "30 ± 2 (stderr)")
  assert table.cell_text({"mean": 30.0, "sd": 1.5, "stderr": 1.0, "values": [29.0, 31.0]}) == (
      "30 ± 1.5 (sd, 2 seeds)")
