"""One settings resolver for every task: defaults, resume, checks common and task-specific."""

from __future__ import annotations

import pytest

from models.training import SpeechTask, TypingTask
from models.training.settings import COMMON_DEFAULTS, resolve_settings
from models.training.speech_task import DEFAULTS as SPEECH_DEFAULTS
from models.training.typing_task import DEFAULTS as TYPING_DEFAULTS

TASKS = {"typing": TypingTask([]), "speech": SpeechTask([])}


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_unset_settings_take_the_defaults_and_given_ones_stay(kind):
    task = TASKS[kind]
    settings = resolve_settings(task, {"epochs": 2, "picks": "mag"}, None)
    defaults = {"typing": TYPING_DEFAULTS, "speech": SPEECH_DEFAULTS}[kind]
    assert settings == {**COMMON_DEFAULTS, **defaults, "epochs": 2, "picks": ["mag"]}


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_resume_takes_the_checkpoint_settings_and_refuses_others(kind):
    task = TASKS[kind]
    saved = resolve_settings(task, {"epochs": 3, "seed": 4}, None)
    assert resolve_settings(task, {"epochs": None, "seed": 4}, saved) == saved
    with pytest.raises(ValueError, match=r"epochs=5 \(checkpoint: 3\) differ from the checkpoint"):
        resolve_settings(task, {"epochs": 5}, saved)


@pytest.mark.parametrize("kind", sorted(TASKS))
@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("epochs", 0, r"'epochs': 0; use an integer >= 1"),
        ("batch_size", 2.5, r"'batch_size': 2.5; use an integer >= 1"),
        ("patience", True, r"'patience': True; use an integer >= 1"),
        ("seed", -1, r"'seed': -1; use an integer >= 0"),
        ("lr", 2, r"'lr': 2; use a number in \(0, 1\)"),
        ("weight_decay", -0.1, r"'weight_decay': -0.1; use a number >= 0"),
        ("config", "huge", r"unknown preset 'huge'"),
        ("init", 3, r"'init': 3; give the path of a pretrained checkpoint"),
    ],
)
def test_every_task_checks_the_common_settings(kind, setting, value, message):
    with pytest.raises(ValueError, match=message):
        resolve_settings(TASKS[kind], {setting: value}, None)


def test_task_specific_settings_are_checked():
    with pytest.raises(ValueError, match=r"Invalid value for 'arch': 'v3'. Use one of"):
        resolve_settings(TASKS["typing"], {"arch": "v3"}, None)
    with pytest.raises(ValueError, match=r"'crop': 1.5; use a probability in \[0, 1\]"):
        resolve_settings(TASKS["typing"], {"crop": 1.5}, None)
    assert TASKS["typing"].architecture({"arch": "v2"}) == "brain2qwerty_v2"
    assert TASKS["speech"].architecture(SPEECH_DEFAULTS) == "speech_clip"
