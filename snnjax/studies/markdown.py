"""Small Markdown helpers shared by the stages' report sections."""

from __future__ import annotations


def fmt(x, digits: int = 3) -> str:
  """A table cell: ``-`` for None, floats to ``digits`` decimals (4 significant from 1000 on)."""
  if x is None:
    return "-"
  if isinstance(x, float):
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.4g}"
  return str(x)


def runs_table(runs: dict) -> list[str]:
  """The Markdown table of trained runs ``{name: train_all record}``."""
  md = ["| run | work dir | this session, s | train s | train acc | test acc |",
        "|---|---|---|---|---|---|"]
  for name, r in sorted(runs.items()):
    final = r["final"]
    md.append(f"| {name} | `runs/{r['workdir'].rstrip('/').split('/')[-1]}` | "
              f"{r['wall_s']:.1f} | {r.get('train_s', 0.0):.1f} | "
              f"{fmt(final.get('train_accuracy'))} | {fmt(final.get('test_accuracy'))} |")
  return md
