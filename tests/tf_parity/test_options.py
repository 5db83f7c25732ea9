"""tf.data's ``options_test.py`` (OptionsTest), for the options pipestate has.

pipestate's ``Options`` has one option, the external state policy
(``external_state_policy``; tf.data's ``experimental_external_state_policy``),
so the tests that merge two different options use that one.

Left out:
- testOptionsHaveDefaults, the optimization / threading / autotune / stats
  sub-options, testOptionsProtoRoundTrip, testThreadingOptionsBackwardCompatibility,
  testPersistenceOptionsSetOutsideFunction: options pipestate does not have.
- testOptionsTwiceDifferentError: tf.data no longer raises; the later value wins
  (tested as test_options_twice_different).
- testName: the ``name=`` argument is tf.data's graph-naming machinery.
"""

from __future__ import annotations

from typing import Any

import pytest

from ._base import Backend


def _options(backend: Backend, policy: str | None = None) -> Any:
    options = backend.data.Options()
    if policy is not None:
        if backend.is_tf:
            member = getattr(backend.data.experimental.ExternalStatePolicy, policy.upper())
            options.experimental_external_state_policy = member
        else:
            options.external_state_policy = getattr(
                backend.data.ExternalStatePolicy, policy.upper()
            )
    return options


def _policy(backend: Backend, options: Any) -> str | None:
    value = (
        options.experimental_external_state_policy
        if backend.is_tf
        else options.external_state_policy
    )
    if value is None:
        return None
    return value.name.lower()


def test_options_default(backend: Backend) -> None:
    dataset = backend.Dataset.range(0)
    assert dataset.options() == backend.data.Options()


def test_options_once(backend: Backend) -> None:
    options = _options(backend)
    dataset = backend.Dataset.range(0).with_options(options).map(lambda x: x)
    assert dataset.options() == options


@pytest.mark.parametrize("policy", ["warn", "ignore", "fail"])
def test_options_twice_same(backend: Backend, policy: str) -> None:
    options = _options(backend, policy)
    dataset = backend.Dataset.range(0).with_options(options).with_options(options)
    assert dataset.options() == options
    assert _policy(backend, dataset.options()) == policy


def test_options_twice_different(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(0)
        .with_options(_options(backend, "warn"))
        .with_options(_options(backend, "ignore"))
    )
    assert _policy(backend, dataset.options()) == "ignore"


def test_options_unset_option_keeps_earlier_value(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(0)
        .with_options(_options(backend, "warn"))
        .with_options(_options(backend))
    )
    assert _policy(backend, dataset.options()) == "warn"


def test_options_merge_options_from_multiple_inputs(backend: Backend) -> None:
    dataset = backend.Dataset.zip(
        (
            backend.Dataset.range(0).with_options(_options(backend, "warn")),
            backend.Dataset.range(0).with_options(_options(backend)),
        )
    )
    assert _policy(backend, dataset.options()) == "warn"


def test_options_through_ops(backend: Backend) -> None:
    dataset = (
        backend.Dataset.range(10)
        .with_options(_options(backend, "ignore"))
        .map(lambda x: x + 1)
        .batch(2)
        .concatenate(backend.Dataset.range(3).batch(2))
    )
    assert _policy(backend, dataset.options()) == "ignore"


def test_with_options_does_not_change_the_elements(backend: Backend) -> None:
    dataset = backend.Dataset.range(5).with_options(_options(backend, "warn"))
    backend.assert_produces(dataset, list(range(5)))
