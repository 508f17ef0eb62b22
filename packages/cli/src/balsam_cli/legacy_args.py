"""Legacy Balsam's command lines, read as argparse read them, before click parses them:

* an option spelled with underscores is its dashed name (``--post_handle_error``);
* an unambiguous prefix of a long option is that option (``ls --hist``, ``ls apps --v``);
* the options legacy took as several words (``--args a b c``, ``--description many words``,
  ``--env A=1 B=2``) take every word up to the next option of the command.

A pure rewrite of the argument list of one command (:func:`rewrite`); ``balsam`` applies it to
the command it runs, so it costs a command nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

#: Options (by command, then parameter name) that take the words after them up to the next
#: option, as legacy's ``nargs='*'`` did.
MULTI_WORD = {"job": frozenset({"args", "description", "env"}),
              "app": frozenset({"description"})}


_HELP = click.Option(["-h", "--help"], is_flag=True)


def _options(command: click.Command) -> dict[str, click.Option]:
    found = {"-h": _HELP, "--help": _HELP}
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                found[opt] = param
    return found


def _takes_value(param: click.Option) -> bool:
    return not param.is_flag and not param.count


def _spelled(token: str, options: dict[str, click.Option]) -> str:
    """``token`` (``--name`` or ``--name=value``) as the option it means, or unchanged."""
    if not token.startswith("--") or token == "--":
        return token
    name, eq, value = token.partition("=")
    if name in options:
        return token
    dashed = name.replace("_", "-")
    if dashed in options:
        return f"{dashed}{eq}{value}"
    matches = {opt: options[opt] for opt in options if opt.startswith(dashed)}
    params = {id(p) for p in matches.values()}
    if len(params) == 1:
        return f"{min(matches, key=len)}{eq}{value}"
    return token


def rewrite(command: click.Command, args: Sequence[str]) -> list[str]:
    """The arguments of ``command`` with legacy spellings turned into click's. A group's own
    options are rewritten up to its subcommand's name; after ``--`` nothing is touched."""
    options = _options(command)
    multi_word = MULTI_WORD.get(command.name or "", frozenset())
    subcommands = set(command.commands) if isinstance(command, click.Group) else set()
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        i += 1
        if token == "--":
            out += items[i - 1:]
            break
        token = _spelled(token, options)
        param = options.get(token.partition("=")[0]) if token.startswith("-") else None
        if param is None:
            out.append(token)
            if isinstance(command, click.Group) and not token.startswith("-"):
                out += items[i:]  # the subcommand and its own arguments
                break
            continue
        if "=" in token or not _takes_value(param):
            out.append(token)
            continue
        if param.name in multi_word:
            words = []
            while i < len(items) and items[i] != "--" and items[i] not in subcommands and \
                    _spelled(items[i], options).partition("=")[0] not in options:
                words.append(items[i])
                i += 1
            if param.multiple:
                for word in words:
                    out += [token, word]
            else:
                out += [token, " ".join(words)] if words else [token]
            continue
        out.append(token)
        optional = getattr(param, "_flag_needs_value", False)  # ``--history [ID]``
        if i < len(items) and not (optional and items[i].startswith("-")):
            out.append(items[i])
            i += 1
    return out
