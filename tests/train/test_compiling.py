"""Compiled calls: installed for student and teacher, and set aside for eager work (FLOP counting)."""

import pytest
import torch
from torch._dynamo.eval_frame import OptimizedModule

from unmasked.objectives import registry
from unmasked.train.compiling import compile_objective, eager_calls, uses_cuda_graphs

from ..helpers import tiny_objective, tiny_registered


@pytest.mark.parametrize("kind", registry.names())
def test_compile_objective_wraps_student_and_teacher_and_eager_calls_sets_them_aside(tmp_path, kind):
    _, obj = tiny_registered(tmp_path, kind)
    compile_objective(obj, obj.student, "reduce-overhead")  # lazy: nothing compiles until called
    student, teacher = obj.__dict__["_student_call"], obj.__dict__["_teacher_call"]
    assert isinstance(student, OptimizedModule)
    assert isinstance(teacher, OptimizedModule) if obj.uses_teacher else teacher is None
    with eager_calls(obj):
        assert obj.__dict__["_student_call"] is None and obj.__dict__["_teacher_call"] is None
    assert obj.__dict__["_student_call"] is student and obj.__dict__["_teacher_call"] is teacher
    # the compiled wrappers are not submodules: checkpoints keep the same keys
    assert set(obj.state_dict()) == set(tiny_registered(tmp_path, kind)[1].state_dict())


def test_compile_objective_refuses_unknown_mode():
    obj = tiny_objective("mae")
    with pytest.raises(ValueError, match="compile mode 'fast'"):
        compile_objective(obj, obj.student, "fast")


def test_cuda_graph_modes():
    assert uses_cuda_graphs("reduce-overhead") and uses_cuda_graphs("max-autotune")
    assert not uses_cuda_graphs("default")


def test_eager_calls_restores_after_an_error():
    obj = tiny_objective("lut")
    compile_objective(obj, obj.student)
    saved = obj.__dict__["_student_call"]
    with pytest.raises(RuntimeError), eager_calls(obj):
        raise RuntimeError("boom")
    assert obj.__dict__["_student_call"] is saved
    torch.compiler.reset()
