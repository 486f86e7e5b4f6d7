"""The repository stands alone: what it needs is in it or declared by it."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import asyncpg
import pytest

from tests.helpers import ROOT


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listed.stdout.splitlines() if (ROOT / name).is_file()]


def test_nothing_refers_to_files_outside_the_repository() -> None:
    """A clone has only the repository: README, docs, tests and scripts must not point at
    the folder that sits beside it on the developers' machines."""
    beside = "sha" + "red"  # spelled apart so that this test does not name it itself
    outside = re.compile(rf"\.\./{beside}|{beside}/fixtures|{beside}/DESIGN")
    offenders = [
        name
        for name in tracked_files()
        if outside.search((ROOT / name).read_text(errors="replace"))
    ]
    assert offenders == []


def imported_distributions() -> set[str]:
    """The distributions whose modules `responder/` and `flows/` import."""
    local = {"responder", "flows"}
    owners = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for path in [*(ROOT / "responder").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in local or top in sys.stdlib_module_names:
                    continue
                found.update(owners.get(top, [top]))
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared() -> None:
    """A package reached only through another one's requirements can vanish on its upgrade."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        canonical(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        for requirement in project["dependencies"]
    }
    missing = {canonical(name) for name in imported_distributions()} - declared
    assert missing == set()


def test_every_declared_dependency_is_bounded() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    unbounded = [r for r in project["dependencies"] if ">=" not in r or "<" not in r]
    assert unbounded == []


@pytest.mark.timeout(600)
def test_the_test_command_starts_its_own_postgresql_when_none_answers() -> None:
    """`make test` on a machine without PostgreSQL: `tests/postgres.sh` starts a throw-away
    cluster (Debian's `postgresql`), hands the command its URL, and removes it afterwards."""
    probe = "import os; print(os.environ['RESPONDER_TEST_POSTGRES_URL'])"
    env = {k: v for k, v in os.environ.items() if k != "RESPONDER_TEST_POSTGRES_URL"}
    env["RESPONDER_TEST_POSTGRES"] = "throwaway"
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        [str(ROOT / "tests" / "postgres.sh"), sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=True,
    )
    url = done.stdout.strip()
    assert url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    assert not url.endswith(":5432/test")
    assert "throw-away PostgreSQL" in done.stderr

    async def connect() -> None:
        await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)

    with pytest.raises(OSError):  # stopped and removed once the command ended
        asyncio.run(connect())
