"""The --devices grammar over a cluster's nodes, and the executor names and addresses."""

from __future__ import annotations

import pytest

from vidshard.errors import ConfigError, DeviceError
from vidshard.executors.ray_slots import ClusterNode, cluster_slots, order_nodes
from vidshard.executors.registry import create_executor, executor_spec

HEAD = ClusterNode("h", "10.0.0.2", cpus=8, gpus=2, head=True)
GPU_NODE = ClusterNode("g", "10.0.0.10", cpus=4, gpus=4)
CPU_NODE = ClusterNode("c", "10.0.0.9", cpus=2)
NPU_NODE = ClusterNode("n", "10.0.0.11", cpus=16, npus=8)


def labels(spec: str, *nodes: ClusterNode, workers_per_device: int = 1) -> list[str]:
    return [s.label for s in cluster_slots(spec, nodes, workers_per_device)]


def test_the_head_first_then_by_address_as_numbers() -> None:
    ordered = order_nodes([GPU_NODE, CPU_NODE, HEAD])
    assert [n.address for n in ordered] == ["10.0.0.2", "10.0.0.9", "10.0.0.10"]


def test_all_is_every_accelerator_of_every_node() -> None:
    assert labels("all", GPU_NODE, HEAD, CPU_NODE) == [
        "10.0.0.2/cuda:0#0",
        "10.0.0.2/cuda:1#1",
        "10.0.0.10/cuda:0#2",
        "10.0.0.10/cuda:1#3",
        "10.0.0.10/cuda:2#4",
        "10.0.0.10/cuda:3#5",
    ]
    assert labels("npu", NPU_NODE, HEAD)[-1] == "10.0.0.11/npu:7#7"


def test_all_without_accelerators_is_cpu_slots_on_each_node() -> None:
    slots = cluster_slots("all", [ClusterNode("a", "10.0.0.2", 8, head=True), CPU_NODE])
    assert [s.label for s in slots] == [
        "10.0.0.2/cpu#0",
        "10.0.0.2/cpu#1",
        "10.0.0.9/cpu#2",
        "10.0.0.9/cpu#3",
    ]
    assert [s.cpu_threads for s in slots] == [4, 4, 1, 1]  # a node's CPUs over its CPU slots


def test_cpu_n_is_spread_over_the_nodes_within_their_cpus() -> None:
    slots = cluster_slots("cpu:5", [HEAD, CPU_NODE])
    assert [s.device.node for s in slots] == [
        "10.0.0.2",
        "10.0.0.9",
        "10.0.0.2",
        "10.0.0.9",
        "10.0.0.2",
    ]
    with pytest.raises(DeviceError, match=r"11 CPU slots, and the cluster offers 10 CPU"):
        cluster_slots("cpu:11", [HEAD, CPU_NODE])


def test_an_item_may_name_its_node() -> None:
    assert labels("10.0.0.10/cuda:1-2,10.0.0.9/cpu:2", HEAD, GPU_NODE, CPU_NODE) == [
        "10.0.0.10/cuda:1#0",
        "10.0.0.10/cuda:2#1",
        "10.0.0.9/cpu#2",
        "10.0.0.9/cpu#3",
    ]
    assert labels("10.0.0.2/cuda:0", HEAD, workers_per_device=2) == [
        "10.0.0.2/cuda:0#0",
        "10.0.0.2/cuda:0#1",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0,1", r"'0' names no node; in a cluster give its node, e\.g\. '10\.0\.0\.2/0'"),
        ("cuda:1", r"names no node"),
        ("10.0.0.99/cuda:0", r"no live node '10\.0\.0\.99' \(nodes: 10\.0\.0\.2, 10\.0\.0\.10\)"),
        ("10.0.0.10/cuda:7", r"no such device cuda:7"),
        ("10.0.0.2/cpu:9", r"9 CPU slots on 10\.0\.0\.2, which offers 8"),
        ("npu", r"no npu devices in the cluster"),
        ("cpu:0", r"expected cpu:N with N >= 1"),
        ("cpu:x", r"expected cpu:N with N >= 1"),
        ("cpu:\u00b2", r"expected cpu:N with N >= 1"),  # a digit int() refuses
        ("10.0.0.2/cpu:\u00b2", r"cpu takes a slot count"),
        ("all,,cpu", r"empty item"),
        ("  ", r"device spec is empty"),
        ("/cuda:0", r"no live node ''"),
        ("10.0.0.2/", r"device spec"),
        ("bogus", r"names no node"),
    ],
)
def test_bad_specs_are_one_line_device_errors(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message) as caught:
        cluster_slots(spec, [HEAD, GPU_NODE])
    assert "\n" not in str(caught.value)


def test_a_node_without_cpus_gets_no_cpu_slot() -> None:
    head = ClusterNode("h", "10.0.0.2", cpus=0, head=True)
    assert labels("all", head, CPU_NODE) == ["10.0.0.9/cpu#0", "10.0.0.9/cpu#1"]


def test_no_live_node() -> None:
    with pytest.raises(DeviceError, match="no live node"):
        cluster_slots("all", [])


def test_executor_specs() -> None:
    assert executor_spec("local") == "local"
    assert executor_spec("ray") == "ray"
    assert executor_spec("ray", "auto") == "ray:auto"
    assert executor_spec("ray", " 10.0.0.2:6379 ") == "ray:10.0.0.2:6379"
    with pytest.raises(ConfigError, match=r"an address is for the ray executor"):
        executor_spec("local", "auto")
    with pytest.raises(ConfigError, match=r"unknown executor 'rya'.*did you mean 'ray'\?"):
        executor_spec("rya")
    with pytest.raises(ConfigError, match=r"executor 'local' takes no address"):
        create_executor("local:auto")


def test_the_ray_executor_is_made_without_connecting() -> None:
    pytest.importorskip("ray")
    executor = create_executor("ray:10.0.0.2:6379")
    assert type(executor).__name__ == "RayExecutor"
    assert executor.address == "10.0.0.2:6379"  # type: ignore[attr-defined]
    assert executor.live_slots() == []
