"""`responder maintenance add|list|remove` against a real Responder HTTP server on
127.0.0.1 (uvicorn, in this process) and a real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from typer.testing import CliRunner

from responder.cli.commands import app
from responder.runtime.service import Service
from tests.helpers import free_port, make_settings
from tests.servers import serve_in_process


async def test_add_list_and_remove_a_window_from_the_command_line(
    tmp_path: Path, rules_dir: Path
) -> None:
    port = free_port()
    settings = make_settings(tmp_path, rules_dir, port=port, operator_token="op-token")
    config = tmp_path / "responder.yaml"
    config.write_text(
        yaml.safe_dump({"host": "127.0.0.1", "port": port, "operator_token": "op-token"})
    )
    service = Service(settings)
    await service.start()
    server, task = await serve_in_process(settings, service)
    runner = CliRunner()

    async def responder(*args: str) -> tuple[int, str]:
        result = await asyncio.to_thread(runner.invoke, app, [*args, "--config", str(config)])
        return result.exit_code, result.output

    try:
        code, out = await responder(
            "maintenance",
            "add",
            "db-patching",
            "--reason",
            "OPS-42",
            "--start",
            "2026-01-04T02:00",
            "--end",
            "2026-01-04T04:00",
            "--timezone",
            "Europe/Paris",
            "--every",
            "FREQ=WEEKLY;BYDAY=SU",
            "--match",
            'env="prod"',
            "--service",
            "db",
            "--host",
            "db-1",
        )
        assert code == 0, out
        assert out.startswith("added: db-patching (api): ")
        assert 'every FREQ=WEEKLY;BYDAY=SU; covers env="prod", service db, host db-1: OPS-42' in out

        code, out = await responder("maintenance", "list")
        assert code == 0 and "db-patching (api)" in out, out

        code, out = await responder(
            "maintenance",
            "add",
            "bad",
            "--reason",
            "x",
            "--end",
            "2026-01-01T00:00",
            "--host",
            "h",
            "--timezone",
            "Nowhere/City",
        )
        assert code == 1 and "422" in out and "timezone" in out, out

        code, out = await responder("maintenance", "remove", "db-patching")
        assert (code, out.strip()) == (0, "removed: db-patching")
        code, out = await responder("maintenance", "list")
        assert (code, out.strip()) == (0, "no maintenance windows")
        code, out = await responder("maintenance", "remove", "db-patching")
        assert code == 1 and "404" in out
    finally:
        server.should_exit = True
        await task
        await service.stop()
