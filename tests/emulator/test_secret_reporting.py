"""The control API's switch for how webhooks show `signing_secrets` (the real API's format
is not ours to choose): each mode as the SDK sees it, bad settings refused, reset restores."""

from __future__ import annotations

import pytest

from gemini_webhooks.emulator import ControlError
from gemini_webhooks.emulator.webhooks import SecretReporting


def _create(emulator):
    return emulator.client().webhooks.create(
        uri="https://consumer.example/hook", subscribed_events=["batch.succeeded"]
    )


def test_truncated_mode_shows_the_visible_lengths_asked_for(emulator):
    emulator.control.set_secret_reporting("truncated", head=8, tail=0)
    hook = _create(emulator)
    body = hook.new_signing_secret.removeprefix("whsec_")
    assert [s.truncated_secret for s in hook.signing_secrets] == [f"whsec_{body[:8]}..."]


def test_masked_mode_shows_no_character_of_the_secret(emulator):
    emulator.control.set_secret_reporting("masked")
    hook = _create(emulator)
    shown = emulator.client().webhooks.get(id=hook.id).signing_secrets
    assert [s.truncated_secret for s in shown] == ["whsec_********"]


def test_empty_mode_shows_an_empty_list_and_absent_mode_no_field(emulator):
    hook = _create(emulator)
    emulator.control.set_secret_reporting("empty")
    assert emulator.client().webhooks.get(id=hook.id).signing_secrets == []
    emulator.control.set_secret_reporting("absent")
    assert emulator.client().webhooks.get(id=hook.id).signing_secrets is None


def test_masked_mode_keeps_reporting_the_grace_expiry(emulator):
    emulator.control.set_secret_reporting("masked")
    client = emulator.client()
    hook = _create(emulator)
    client.webhooks.rotate_signing_secret(
        id=hook.id, revocation_behavior="revoke_previous_secrets_after_h24"
    )
    shown = client.webhooks.get(id=hook.id).signing_secrets
    assert [s.expire_time is not None for s in shown] == [False, True]


def test_reset_restores_the_configured_reporting(emulator):
    emulator.control.set_secret_reporting("absent")
    emulator.control.reset()
    assert emulator.control._call("GET", "/emulator/v1/secret-reporting") == {
        "mode": "truncated",
        "head": 4,
        "tail": 4,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "hidden"},
        {"mode": "truncated", "head": "4"},
        {"mode": "truncated", "tail": True},
        {"mode": "truncated", "head": -1},
        {"mode": "truncated", "tail": 17},
        {"mode": "masked", "colour": "red"},
    ],
    ids=["unknown-mode", "string-head", "bool-tail", "negative", "too-long", "unknown-field"],
)
def test_a_bad_setting_is_refused_and_changes_nothing(emulator, body):
    with pytest.raises(ControlError) as refused:
        emulator.control._call("PUT", "/emulator/v1/secret-reporting", json=body)
    assert refused.value.status_code == 400
    assert emulator.emulator.webhooks.reporting == SecretReporting()


def _cli_config(*argv: str):
    import argparse

    from gemini_webhooks.emulator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.config_from_args(parser.parse_args(list(argv)))


def test_the_cli_sets_the_reporting_mode_and_visible_lengths():
    config = _cli_config("--secret-reporting", "truncated", "--secret-visible", "6:2")
    assert config.secret_reporting == SecretReporting("truncated", 6, 2)
    assert _cli_config("--secret-reporting", "absent").secret_reporting.mode == "absent"


@pytest.mark.parametrize("visible", ["4", "a:b", "-1:4", "17:0", "4:4:4"])
def test_the_cli_refuses_bad_visible_lengths(visible, capsys):
    with pytest.raises(SystemExit):
        _cli_config("--secret-visible", visible)
    assert "--secret-visible" in capsys.readouterr().err
