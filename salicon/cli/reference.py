"""The command-line reference as Markdown, generated from the argparse parsers
(the documentation site builds its page from it, so it cannot drift)."""
from __future__ import annotations

import argparse

SUPPRESSED = argparse.SUPPRESS


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option (``--model``, ``-o``, ...) and positional (by its metavar or name) of ``parser``."""
    names: list[str] = []
    for action in parser._actions:
        if action.help == SUPPRESSED or isinstance(action, argparse._SubParsersAction):
            continue
        names.extend(action.option_strings or [str(action.metavar or action.dest)])
    return names


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _describe(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % {**vars(action), "prog": "salicon", "default": action.default}
    extra = []
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        extra.append("choices: " + ", ".join(f"`{c}`" for c in action.choices))
    if action.default not in (None, False, SUPPRESSED, [], "") and action.option_strings and action.nargs != 0:
        extra.append(f"default: `{action.default}`")
    return _cell(text + (f" ({'; '.join(extra)})" if extra else ""))


def _name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    value = ""
    if action.nargs != 0:
        metavar = action.metavar or action.dest.upper()
        value = f" {metavar}" if action.nargs is None else f" [{metavar}]" if action.nargs == "?" else f" {metavar}..."
    return ", ".join(f"`{o}{value}`" for o in action.option_strings)


def command_markdown(name: str, parser: argparse.ArgumentParser) -> str:
    """One subcommand: its usage, description and a table of its arguments by group."""
    lines = [f"## `salicon {name}`", "", "```text", parser.format_usage().strip(), "```", ""]
    if parser.description:
        lines += [" ".join(parser.description.split()) if "\n\n" not in parser.description
                  else parser.description.strip(), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != SUPPRESSED]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{title[0].upper() + title[1:]}**", ""]
        if group.description:
            lines += [" ".join(group.description.split()), ""]
        lines += ["| argument | meaning |", "| --- | --- |"]
        lines += [f"| {_name(a)} | {_describe(a)} |" for a in actions]
        lines.append("")
    return "\n".join(lines)


def markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The reference of every subcommand of ``salicon`` (or of ``parser``)."""
    if parser is None:
        from . import build_parser

        parser = build_parser()
    parts = [command_markdown(name, sub) for name, sub in _subparsers(parser).items()]
    return "\n".join(parts)


def subcommand_options(parser: argparse.ArgumentParser | None = None) -> dict[str, list[str]]:
    """Subcommand -> every option it takes (what the reference must list)."""
    if parser is None:
        from . import build_parser

        parser = build_parser()
    return {name: option_strings(sub) for name, sub in _subparsers(parser).items()}


__all__ = ["markdown", "command_markdown", "subcommand_options", "option_strings"]
