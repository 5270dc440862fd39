"""Shell completion, generated from the argument parser itself (one source of truth):
subcommands, each one's flags, the choices of `-o`, and GeminiWebhook names (asked of
the cluster with kubectl, honouring `-n`, `--context` and `--kubeconfig` on the line)."""

from __future__ import annotations

import argparse
import shlex

NAMED = ("status", "rotate", "sync", "ping", "pause", "resume", "verify", "replay")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse exposes subparsers only this way
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings]


def bash_script(parser: argparse.ArgumentParser) -> str:
    commands = _subparsers(parser)
    cases = "\n".join(
        f"        {name}) flags={shlex.quote(' '.join(_flags(sub)))} ;;"
        for name, sub in commands.items()
    )
    return f"""# bash completion for kubectl-gemini (kubectl gemini)
# source <(kubectl-gemini completion bash)
_kubectl_gemini() {{
    local cur prev command="" flags word i kubeargs=()
    cur=${{COMP_WORDS[COMP_CWORD]}}
    prev=${{COMP_WORDS[COMP_CWORD-1]}}
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        case $word in
            -n|--namespace|--context|--kubeconfig) kubeargs+=("$word" "${{COMP_WORDS[i+1]}}") ;;
            -*) ;;
            *) [[ -z $command && " {" ".join(commands)} " == *" $word "* ]] && command=$word ;;
        esac
    done
    case $prev in
        -o|--output) COMPREPLY=($(compgen -W "text json yaml" -- "$cur")); return ;;
        --headers|--body|--kubeconfig) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -n|--namespace)
            COMPREPLY=($(compgen -W "$(kubectl get namespaces -o name 2>/dev/null \\
                | sed 's|^namespace/||')" -- "$cur")); return ;;
    esac
    if [[ -z $command ]]; then
        COMPREPLY=($(compgen -W "{" ".join(commands)} {" ".join(_flags(parser))}" -- "$cur"))
        return
    fi
    case $command in
{cases}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [[ " {" ".join(NAMED)} " == *" $command "* ]]; then
        COMPREPLY=($(compgen -W "$(kubectl "${{kubeargs[@]}}" get geminiwebhooks \\
            -o custom-columns=:metadata.name --no-headers 2>/dev/null)" -- "$cur"))
    elif [[ $command == completion ]]; then
        COMPREPLY=($(compgen -W "bash" -- "$cur"))
    fi
}}
complete -F _kubectl_gemini kubectl-gemini
"""
