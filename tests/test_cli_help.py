"""The command line's manners: every option's help shows its default (or that it is required)
and its unit, every command ends its help with an example that parses, and ``catalog serve`` on
a busy port fails with one line instead of reporting another server as its own."""

from __future__ import annotations

import argparse
import http.server
import json
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from arctic_rts.cli import EXIT_ERROR, build_parser, main
from arctic_rts.cli_help import EXAMPLES, HelpFormatter


def _parsers(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the CLI with the words that reach it (``("inventory", "run")``)."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*words, name))


def _options() -> list[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    return [
        (" ".join(words) + " " + action.option_strings[-1], parser, action)
        for words, parser in _parsers(build_parser())
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "version")
    ]


OPTIONS = {name: (parser, action) for name, parser, action in _options()}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_option_shows_its_default(name: str) -> None:
    parser, action = OPTIONS[name]
    text = HelpFormatter(parser.prog)._get_help_string(action)
    assert "default: " in text or text.endswith("(required)"), text
    # and the help renders (argparse expands % in it)
    assert action.option_strings[-1] in parser.format_help()


def test_units_and_crs_are_in_the_help() -> None:
    helps = {name: HelpFormatter("x")._get_help_string(a) for name, _, a in _options()}
    for name in ("map --bbox", "dataset build --unlabelled-bbox"):
        assert "degrees" in helps[name] and "EPSG:4326" in helps[name], name
        assert "west south east north" in helps[name]
    assert "%" in build_parser()._subparsers._group_actions[0].choices["map"].format_help()  # type: ignore[union-attr]
    for name, unit in [
        ("map --min-area", "m2"),
        ("map --tile-size", "pixels"),
        ("map --max-cloud", "in %%"),
        ("map --threshold", "probability 0-1"),
        ("dataset build --tolerance-days", "in days"),
        ("inventory run --year", "September 1"),
    ]:
        assert unit in helps[name], name


def test_every_command_has_an_example_that_parses() -> None:
    parser = build_parser()
    for words, sub in _parsers(parser):
        help_text = sub.format_help()
        assert "\nexample:\n  arctic-rts " in help_text, words
        for line in EXAMPLES[" ".join(words)].splitlines():
            argv = shlex.split(line.strip())
            assert argv[0] == "arctic-rts"
            parser.parse_args(argv[1:])  # exits (a failure here) if it does not parse


class _CatalogRoot(http.server.BaseHTTPRequestHandler):
    """Another server that answers like a STAC API's root."""

    def do_GET(self) -> None:
        body = json.dumps({"id": "someone-else", "type": "Catalog", "links": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_catalog_serve_on_a_busy_port_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CatalogRoot)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        code = main(["catalog", "serve", str(tmp_path), "--port", str(port)])
    finally:
        server.shutdown()
        server.server_close()
    captured = capsys.readouterr()
    assert code == EXIT_ERROR and captured.out == ""
    assert captured.err.startswith(f"arctic-rts: error: port {port} on 127.0.0.1 is in use")
    assert captured.err.count("\n") == 1 and "--port" in captured.err
