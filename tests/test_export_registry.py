"""The export scripts' registry reuse, on a stand-in for torch's registry module (no torch)."""

from __future__ import annotations

import sys
import types

import pytest

from pytest_rknn.variants.export_registry import reuse_torchlib_registry

NAME = "torch.onnx._internal.exporter._registration"


@pytest.fixture
def registration(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in ``_registration`` whose registries count how often one was built."""
    module = types.ModuleType(NAME)

    class ONNXRegistry:
        built = 0

        @classmethod
        def from_torchlib(cls, opset_version=18, extra=None):
            cls.built += 1
            registry = cls()
            registry.opset_version = opset_version
            return registry

    module.ONNXRegistry = ONNXRegistry
    parts = NAME.split(".")
    for depth in range(1, len(parts)):
        monkeypatch.setitem(sys.modules, ".".join(parts[:depth]), types.ModuleType(parts[depth]))
    monkeypatch.setattr(sys.modules[".".join(parts[:-1])], "_registration", module, raising=False)
    monkeypatch.setitem(sys.modules, NAME, module)
    return module


def test_one_registry_per_opset_serves_the_batch(registration: types.ModuleType) -> None:
    registry = registration.ONNXRegistry
    assert reuse_torchlib_registry() is True
    first, again = registry.from_torchlib(), registry.from_torchlib()
    other = registry.from_torchlib(opset_version=23)
    assert first is again and other is not first
    assert (first.opset_version, other.opset_version, registry.built) == (18, 23, 2)
    assert reuse_torchlib_registry() is True, "a second call wraps nothing twice"
    assert registry.from_torchlib() is first and registry.built == 2
    unhashable = registry.from_torchlib(extra={"a": 1}), registry.from_torchlib(extra={"a": 1})
    assert unhashable[0] is not unhashable[1] and registry.built == 4, "made, not reused"


def test_a_torch_without_that_registry_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, NAME, None)
    assert reuse_torchlib_registry() is False
