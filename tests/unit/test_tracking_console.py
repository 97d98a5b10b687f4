"""The console: plain periodic lines off a terminal, the PPO step line and timing table, quiet filters."""

from __future__ import annotations

import logging
import os
import warnings

from rlhf_dist.tracking import console as console_mod
from rlhf_dist.tracking.console import StageProgress, ppo_step_line, ppo_timing_table
from rlhf_dist.tracking.quiet import KNOWN_WARNINGS, _ConsoleFilter, output_to


def test_non_tty_prints_plain_lines_not_redraws(capsys):
    assert not console_mod.is_tty()  # pytest captures stdout: not a terminal
    with StageProgress("reward model", total=4, every_s=0.0) as bar:
        for i in range(4):
            bar.advance(status=f"loss {1 - i / 10:.2f}")
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b[" not in out  # no cursor movement, no colour codes
    lines = out.splitlines()
    assert lines[0] == "reward model: started (4 to do)"
    assert lines[-1].startswith("reward model 4/4 loss 0.70 (")
    assert "ETA" in lines[1]


def test_non_tty_lines_are_periodic(capsys):
    with StageProgress("ppo", total=100, every_s=3600) as bar:
        for _ in range(99):
            bar.advance(status="x")
    out = capsys.readouterr().out.splitlines()
    # start line + the still-unfinished stage's closing line: no line per advance
    assert len(out) == 2 and out[1].startswith("ppo: done in")


def test_spinner_stage_says_it_is_alive(capsys):
    import time

    with StageProgress("sampling", every_s=0.05):
        time.sleep(0.3)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sampling: started" and any("running" in line for line in out)
    assert out[-1].startswith("sampling: done in")


def test_ppo_step_line_and_timing_table():
    m = {"reward/score_raw": 1.5, "kl/seq_k1": 0.25, "response/length": 24.0, "time/step": 30.0,
         "time/generation": 12.0, "time/training": 15.0}
    line = ppo_step_line(3, 12, m, eta_s=270)
    assert line == "ppo step 3/12  reward 1.500  kl 0.250  len 24.0  30.0 s/step  ETA 0:04:30"
    assert "ETA" not in ppo_step_line(12, 12, m, eta_s=0)
    table = ppo_timing_table([m, m]).splitlines()
    assert table[0] == "PPO phase timing (mean over 2 steps)"
    assert table[2].split() == ["generation", "12.00", "40.0%"] and table[-1].split() == ["step", "30.00"]


def test_console_filter_keeps_own_logs_and_third_party_errors():
    keep = _ConsoleFilter().filter
    rec = lambda name, level: logging.LogRecord(name, level, __file__, 1, "m", None, None)  # noqa: E731
    assert keep(rec("rlhf_dist.stages.reward", logging.INFO))
    assert not keep(rec("vllm.triton_utils.importing", logging.WARNING))
    assert keep(rec("vllm.engine", logging.ERROR))


def test_known_warnings_name_why_and_match_the_real_text():
    assert all(why for _, _, why in KNOWN_WARNINGS)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for category, message, _ in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        warnings.warn("`torch.distributed.reduce_op` is deprecated, please use ReduceOp", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_output_to_sends_fd_writes_to_the_file(tmp_path, capfd):
    log = tmp_path / "logs" / "engine.log"
    with output_to(log):
        os.write(1, b"engine noise on fd 1\n")
        os.write(2, b"NUMA warning on fd 2\n")
    os.write(1, b"back on the console\n")
    out, err = capfd.readouterr()
    assert "noise" not in out + err and "NUMA" not in out + err and "back on the console" in out
    assert log.read_text() == "engine noise on fd 1\nNUMA warning on fd 2\n"


def test_caller_printed_lines_replace_the_periodic_ones(capsys):
    with StageProgress("ppo", total=2, every_s=0.0, plain_lines=False) as bar:
        bar.advance()
        bar.advance()
    assert capsys.readouterr().out.splitlines() == ["ppo: started (2 to do)"]


def test_verbose_redirects_nothing(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("RLHF_DIST_VERBOSE", "1")
    log = tmp_path / "engine.log"
    with output_to(log) as where:
        os.write(2, b"NUMA warning on fd 2\n")
    assert where is None and not log.exists()
    assert "NUMA warning" in capfd.readouterr().err
