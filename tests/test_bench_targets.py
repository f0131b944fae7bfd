"""Target profiles (TOML), the op-limit warnings, and the node-coverage rule of the host worker (pure, fast)."""
from __future__ import annotations

import json

import pytest

from edgeq.bench.errors import TargetError
from edgeq.bench.host_worker import delegation
from edgeq.modelinfo import ModelInfo
from edgeq.modes import Mode
from edgeq.targets import (PROJECT_TARGETS, DelegateKind, Transport, known_targets, load_target, parse_target,
                           unsupported_ops)

from conftest import one_line_error

KINDS = {"host", "rpi4", "rpi5", "android-cpu", "android-gpu", "android-npu-qnn", "coral-edgetpu"}


def test_every_device_kind_has_a_valid_profile():
    assert KINDS <= set(known_targets())
    for name in known_targets():
        p = load_target(name)
        assert p.name == name and isinstance(p.precision, Mode) and isinstance(p.transport, Transport)
        assert p.threads >= 1 and p.delegates
        assert json.loads(json.dumps(p.to_dict()))["transport"] == p.transport.value


def test_profiles_say_what_each_target_wants():
    assert load_target("coral-edgetpu").precision is Mode.INT8
    assert load_target("coral-edgetpu").op_limits.requires_fully_integer
    assert load_target("android-gpu").precision is Mode.FP16
    assert load_target("android-gpu").delegates[0].kind is DelegateKind.GPU
    qnn = load_target("android-npu-qnn").delegates[0]
    assert qnn.kind is DelegateKind.EXTERNAL and qnn.library.endswith(".so") and qnn.options["backend_type"] == "htp"
    assert load_target("host").transport is Transport.LOCAL
    assert load_target("rpi5").transport is Transport.SSH and load_target("android-cpu").transport is Transport.ADB
    assert load_target("android-cpu").cpu.big_core_mask


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(TargetError) as info:
        load_target("pixel99")
    assert "pixel99" in str(info.value) and "coral-edgetpu" in str(info.value)


@pytest.mark.parametrize("text, needle", [
    ("transport = 'carrier-pigeon'\nprecision = 'int8'\n", "'transport'"),
    ("transport = 'ssh'\n", "'precision'"),
    ("transport = 'ssh'\nprecision = 'int8'\n[[delegates]]\nkind = 'tpu9000'\n", "'delegates'"),
    ("transport = [unclosed", "not valid TOML"),
])
def test_bad_profile_files_are_one_line_naming_the_key(tmp_path, text, needle):
    f = tmp_path / "mine.toml"
    f.write_text(text)
    with pytest.raises(TargetError) as info:
        load_target(str(f))
    assert str(f) in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_a_profile_path_can_be_given_directly(tmp_path):
    mine = tmp_path / "my-board.toml"  # outside every search folder, under a name no profile has
    mine.write_text('name = "my-board"\ntransport = "ssh"\nprecision = "fp16"\nthreads = 3\naddress = "me@board"\n'
                    'emulated = true\n')
    p = load_target(str(mine))
    assert (p.name, p.transport.value, p.precision.value, p.threads, p.address, p.emulated, p.source) == \
        ("my-board", "ssh", "fp16", 3, "me@board", True, str(mine))
    assert load_target("rpi4").emulated is False


def test_cli_targets_list_show_and_unknown(cli):
    res = cli("targets", "list")
    assert res.code == 0 and all(k in res.out for k in KINDS)
    res = cli("targets", "show", "coral-edgetpu", "--json")
    assert res.code == 0 and json.loads(res.out)["precision"] == "int8"
    assert "Edge TPU" in cli("targets", "show", "coral-edgetpu").out
    one_line_error(cli("targets", "show", "nope"), "unknown target 'nope'", "rpi5")


def _info(op_counts: dict[str, int], float_ops: list[str], dtypes: dict[str, int]) -> ModelInfo:
    return ModelInfo(path="m.tflite", size_bytes=1, inputs=[], outputs=[], op_counts=op_counts,
                     tensors_by_dtype=dtypes, weights=[], size_by_group={}, float_ops=float_ops)


def test_unsupported_ops_allowlist_denylist_integer_and_slow_modes():
    coral, qnn, host = load_target("coral-edgetpu"), load_target("android-npu-qnn"), load_target("host")
    integer = _info({"CONV_2D": 3, "GATHER_ND": 1}, [], {"int8": 10, "int32": 2})
    [w] = unsupported_ops(coral, integer)
    assert (w.op, w.count) == ("GATHER_ND", 1) and "Edge TPU" in str(w)
    floaty = _info({"CONV_2D": 2, "SIN": 1}, ["CONV_2D (a)", "CONV_2D (b)", "SIN (c)"], {"float32": 5})
    ws = unsupported_ops(qnn, floaty)
    assert [w.op for w in ws] == ["SIN", "float ops"]  # denylisted op, then one line for float compute
    assert "CONV_2D x2" in str(ws[1]) and "--mode int8" in str(ws[1])
    assert unsupported_ops(host, floaty) == []
    assert [w.op for w in unsupported_ops(host, integer, Mode.INT16X8)] == ["mode int16x8"]
    # float I/O around an integer graph (QUANTIZE/DEQUANTIZE at the edges) is not float compute
    assert unsupported_ops(coral, _info({"CONV_2D": 1}, [], {"int8": 3, "float32": 2})) == []


def _op(index, name, inputs, outputs):
    return {"index": index, "op_name": name, "inputs": inputs, "outputs": outputs}


def test_delegation_counts_the_nodes_behind_each_delegate_kernel():
    # 0:CONV(t0->t1) 1:RELU(t1->t2) 2:SOFTMAX(t2->t3) 3:CONV(t3->t4); two partitions around the SOFTMAX
    ops = [_op(0, "CONV_2D", [0, 10], [1]), _op(1, "RELU", [1], [2]), _op(2, "SOFTMAX", [2], [3]),
           _op(3, "CONV_2D", [3, 11], [4]),
           _op(4, "DELEGATE", [0, 10], [2]), _op(5, "DELEGATE", [3, 11], [4])]
    [cov] = delegation(ops, "X")
    assert (cov.nodes_delegated, cov.nodes_total, cov.partitions) == (3, 4, 2)
    assert cov.not_delegated == ("SOFTMAX",) and not cov.fully_delegated
    full = delegation([_op(0, "ADD", [0, 1], [2]), _op(1, "DELEGATE", [0, 1], [2])], "X")[0]
    assert full.fully_delegated and full.describe() == "X: 1 of 1 nodes delegated (1 partition)"
    assert delegation([_op(0, "ADD", [0, 1], [2])], "X") == []  # no delegate kernel at all
