"""The benchmark scripts run and print their tables, at toy sizes on the CPU.

They are what a GPU session runs with its few minutes of device time (bench/gpu_suite.sh), with
the arguments used there; a script broken by a change elsewhere (an import of a renamed helper)
would cost such a session its measurement. Figures are not checked, only that every rate is a
positive number: timing belongs to the benchmarks, not to tests.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(*args):
    """stdout of ``python bench/<args>``, run as the GPU suite runs it (cwd the repo root)."""
    proc = subprocess.run([sys.executable] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(out, header_start):
    """The data rows (lists of cells) of the markdown table whose header starts with
    ``header_start``: its "|" lines, past Warp's start-up lines printed in between."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 2:]
            if line.startswith("|") and not line.startswith("|-")]


def number(cell):
    return float(cell.replace(",", "").replace("%", "").replace("*", "").split()[0])


@pytest.mark.parametrize("engine", ["mujoco", "newton"])
def test_sim_throughput_prints_every_column(engine):
    if engine == "newton":
        pytest.importorskip("newton", reason="newton[sim] not installed")
    out = run_bench("bench/sim_throughput.py", "--task", "MultiBallPush", "--engines", engine,
                    "--num-envs", "2", "4", "--seconds", "0.1", "--cuda-graph")
    rows = table_rows(out, "| engine")
    assert [r[:2] for r in rows] == [[engine, "2"], [engine, "4"]]
    for r in rows:  # raw engine, task step and the task layer alone measured (a positive rate)
        assert number(r[4]) > 0 and number(r[5]) > 0 and number(r[8]) > 0, r


def test_train_throughput_prints_a_row_per_size():
    pytest.importorskip("newton", reason="newton[sim] not installed")
    out = run_bench("bench/train_throughput.py", "--task", "MultiBallPush", "--engine", "newton",
                    "--num-envs", "4", "--iterations", "1", "--seconds", "0.1",
                    "--set", "runner.batch_size=4", "--set", "agent.hidden_dim=16")
    (row,) = table_rows(out, "| num_envs")
    assert row[0] == "4"
    raw, task, collect, grad = (number(c) for c in row[1:5])
    assert min(raw, task, collect, grad) > 0, row


def test_task_ops_counts_kernels_without_read_backs():
    out = run_bench("bench/task_ops.py", "--task", "MultiBallPush", "--steps", "4")
    assert number(table_rows(out, "| function")[-1][1]) > 0
    assert "values read back into Python: 0" in out


def test_learner_throughput_and_replay_memory_print_their_figures():
    out = run_bench("bench/learner_throughput.py", "--device", "cpu", "--num-envs", "8",
                    "--batch", "4", "--hidden", "16", "--repeats", "1", "--cuda-graph")
    figures = {k.strip(): v.strip() for k, v in (line.rsplit("  ", 1) for line in out.splitlines()
                                                  if "  " in line)}
    assert number(figures["act+step+store env-steps/s"]) > 0
    assert number(figures["replay bytes per env step"]) > 0
    rows = table_rows(run_bench("bench/replay_memory.py"), "| task")
    assert {r[0] for r in rows} >= {"MultiBallPush", "MultiAntPush"}
    assert all(number(r[4]) > 0 for r in rows)
