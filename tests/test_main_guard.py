"""Store build and prepare from a script without ``if __name__ == "__main__":``: one clear error.

Worker processes start with ``spawn``, which runs the main script again in each of them. The scripts
below are run as a user runs them, all at once (each pays a few seconds of interpreter and torch
start-up); the detection itself is tested on sources and on a stand-in ``__main__`` module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from asyncdecode import GopStore, InvalidRequestError
from asyncdecode._pool import check_main_guard, completed, has_main_guard
from asyncdecode.prepare import prepare
from asyncdecode.testing import VideoSpec, make_clip_set

REPO = Path(__file__).resolve().parents[1]

GUARD = 'if __name__ == "__main__":'

# -- detection on sources ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    f"main()\n{GUARD}\n    main()\n",
    'if "__main__" == __name__:\n    main()\n',
    "if __name__ != '__main__':\n    raise SystemExit\nmain()\n",
    "if __name__ in ('__main__',):\n    main()\n",
    "import sys\nif __name__ == '__main__' and len(sys.argv) > 1:\n    main()\n",
    f"try:\n    {GUARD}\n        main()\nexcept KeyboardInterrupt:\n    pass\n",
    f"def main():\n    build()\n\n{GUARD}\n    main()\n",
], ids=["plain", "reversed", "not-equal", "in", "and", "in-try", "call-in-function"])
def test_a_top_level_guard_is_found(source):
    assert has_main_guard(source)


@pytest.mark.parametrize("source", [
    "import asyncio\nasyncio.run(build())\n",
    "def main():\n    asyncio.run(build())\n\nmain()\n",
    f"def main():\n    {GUARD}\n        build()\n\nmain()\n",
    "if __name__ == 'mymodule':\n    main()\n",
    "NAME = '__main__'\nmain()\n",
    "",
], ids=["call", "call-in-function", "guard-in-function", "other-name", "no-if", "empty"])
def test_no_top_level_guard(source):
    assert not has_main_guard(source)


def test_a_source_that_is_not_python_is_a_syntax_error():
    with pytest.raises(SyntaxError):
        has_main_guard("def (:\n")


# -- detection on the running __main__ ----------------------------------------------------------------


def _main_module(monkeypatch, path: Path | None, source: str = "", spec_name: str | None = None) -> None:
    """Stand in for this process's ``__main__``: the script at ``path`` holding ``source``."""
    module = types.ModuleType("__main__")
    if path is not None:
        path.write_text(source)
        module.__file__ = str(path)
    module.__spec__ = types.SimpleNamespace(name=spec_name) if spec_name else None
    monkeypatch.setitem(sys.modules, "__main__", module)


def test_an_unguarded_script_is_refused_with_both_fixes(monkeypatch, tmp_path):
    script = tmp_path / "build.py"
    _main_module(monkeypatch, script, "import asyncio\nasyncio.run(build())\n")
    with pytest.raises(InvalidRequestError) as info:
        check_main_guard("spawn")
    message = str(info.value)
    assert message.startswith(f"{script} has no 'if __name__ == \"__main__\":' block: worker processes start "
                              "with 'spawn'")
    assert message.endswith(f"Put the call under '{GUARD}', or pass executor=\"thread\"")
    assert info.value.path == str(script)
    with pytest.raises(InvalidRequestError):
        check_main_guard("forkserver")
    check_main_guard("fork")  # fork runs nothing again


def test_a_worker_running_the_script_again_is_refused(monkeypatch, tmp_path):
    """What a spawned worker's own run of the script meets, if the parent's check passed it."""
    script = tmp_path / "build.py"
    _main_module(monkeypatch, None)
    monkeypatch.setitem(sys.modules, "__mp_main__", types.SimpleNamespace(__file__=str(script)))
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(InvalidRequestError, match=f"^a worker process running {script} again started worker "
                                                  "processes: worker processes start with 'spawn'"):
        check_main_guard("spawn")


@pytest.mark.parametrize("case", ["guarded", "no-file", "package-main", "unreadable", "not-python"])
def test_what_passes(monkeypatch, tmp_path, case):
    script = tmp_path / "build.py"
    if case == "guarded":
        _main_module(monkeypatch, script, f"{GUARD}\n    build()\n")
    elif case == "no-file":  # python -c, an interactive session
        _main_module(monkeypatch, None)
    elif case == "package-main":  # python -m pkg: multiprocessing does not run pkg/__main__.py again
        _main_module(monkeypatch, script, "build()\n", spec_name="pkg.__main__")
    elif case == "unreadable":
        _main_module(monkeypatch, script)
        script.unlink()
    else:
        _main_module(monkeypatch, script, "build(\n")
    check_main_guard("spawn")


def test_a_module_run_with_dash_m_is_checked(monkeypatch, tmp_path):
    _main_module(monkeypatch, tmp_path / "tool.py", "build()\n", spec_name="tool")
    with pytest.raises(InvalidRequestError, match="tool.py has no"):
        check_main_guard("spawn")


async def test_store_build_and_prepare_fail_fast_and_threads_still_work(monkeypatch, tmp_path):
    """The error comes before any worker starts; executor="thread" runs the same build."""
    videos = tmp_path / "videos"
    make_clip_set(videos, cameras=2, spec=VideoSpec(width=64, height=48, num_frames=8, gop=4))
    _main_module(monkeypatch, tmp_path / "build.py", "asyncio.run(build())\n")
    store = GopStore(tmp_path / "gops", video_root=videos)
    with pytest.raises(InvalidRequestError, match="executor=\"thread\""):
        await store.build(progress=False, executor="process")
    with pytest.raises(InvalidRequestError, match="executor=\"thread\""):
        await prepare(videos, tmp_path / "prepared", executor="process", progress=False)
    assert not list((tmp_path / "prepared").rglob("*.mp4"))
    summary = await store.build(progress=False, executor="thread")  # the lock was let go
    assert summary.built == 2 and summary.ok


async def test_completed_on_threads_checks_nothing(monkeypatch, tmp_path):
    _main_module(monkeypatch, tmp_path / "build.py", "build()\n")
    async with contextlib.aclosing(completed(abs, [-1, -2], workers=2, executor="thread")) as runs:
        results = sorted([r async for batch in runs for _, r in batch])
    assert results == [1, 2]


# -- scripts, run as a user runs them ------------------------------------------------------------------

SCRIPTS = {
    # a user's first try
    "unguarded": """
        import asyncio
        from asyncdecode import GopStore

        asyncio.run(GopStore("gops-unguarded", video_root="videos").build())
        """,
    "guarded": """
        import asyncio
        from asyncdecode import GopStore

        if __name__ == "__main__":
            print(asyncio.run(GopStore("gops-guarded", video_root="videos").build(progress=False)))
        """,
    # a guard, but the build above it: the check passes, and the workers die running the build again
    "guard-below": """
        import asyncio
        from asyncdecode import GopStore

        asyncio.run(GopStore("gops-guard-below", video_root="videos").build())

        if __name__ == "__main__":
            print("done")
        """,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Each script's run and path. One video: one worker process (each start imports torch again)."""
    root = tmp_path_factory.mktemp("guard_scripts")
    make_clip_set(root / "videos", cameras=1, spec=VideoSpec(width=64, height=48, num_frames=8, gop=4))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    scripts = {name: root / f"{name}.py" for name in SCRIPTS}
    for name, text in SCRIPTS.items():
        scripts[name].write_text(textwrap.dedent(text))

    def run(script: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True,
                              timeout=100)

    with concurrent.futures.ThreadPoolExecutor(len(scripts)) as pool:
        return {name: (proc, scripts[name]) for name, proc in zip(scripts, pool.map(run, scripts.values()))}


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_an_unguarded_script_stops_before_any_worker(runs):
    proc, script = runs["unguarded"]
    assert proc.returncode == 1 and proc.stdout == ""
    assert _last_line(proc.stderr) == (
        f"asyncdecode.errors.InvalidRequestError: {script} has no 'if __name__ == \"__main__\":' block: "
        "worker processes start with 'spawn', which runs the main script again in each of them, and each would "
        f"start the same work again. Put the call under '{GUARD}', or pass executor=\"thread\"")
    assert proc.stderr.count("Traceback") == 1  # no worker started, so none failed
    assert "another build" not in proc.stderr and "died" not in proc.stderr
    assert not list((script.parent / "gops-unguarded").rglob(".gop_index.json"))


def test_a_guarded_script_builds(runs):
    proc, script = runs["guarded"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("BuildSummary(1 built, 0 skipped, 0 failed of 1 videos")
    assert len(list((script.parent / "gops-guarded").rglob(".gop_index.json"))) == 1


def test_workers_that_die_running_the_script_again_give_the_same_error(runs):
    proc, script = runs["guard-below"]
    assert proc.returncode == 1 and proc.stdout == ""
    assert _last_line(proc.stderr) == (
        f"asyncdecode.errors.InvalidRequestError: the worker processes died while running {script} again "
        "(their tracebacks are above): worker processes start with 'spawn', which runs the main script again in "
        "each of them, and a call at its top level that starts the work must not run there. Put the call under "
        f"'{GUARD}', or pass executor=\"thread\"")
    assert "the worker died" not in proc.stderr
