"""Several nodes, simulated on this machine: the real CLI launched once per "node" on the loopback
address, one process a node, DDP over gloo, started as torchrun, srun or a bare launch start it on
a cluster (docs/usage.md, "Several nodes"). Lightning reads a different cluster environment from
each: TorchElasticEnvironment, SLURMEnvironment, LightningEnvironment."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fssam2.cli import run_cli
from helpers import TESTS, TINY, free_port
from test_resume import assert_same, load

NODES = 2
# Set by a launcher or a scheduler: a node's process must see only those its launch gives it.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK")
LAUNCH_VARIABLES += ("MASTER_ADDR", "MASTER_PORT")
# What each process did, summed over the processes (each encodes and reads the images its own
# batches show): the only entries of test_metrics.json that may depend on the number of processes.
WORK_COUNTERS = {
    "encoder_passes",
    "memory_encoder_passes",
    "images_shipped",
    "images_read_late",
    "distinct_images",
    "image_bytes_shipped",
}


@dataclass
class Node:
    proc: subprocess.Popen
    err: Path  # its stderr (with torchrun: the agent's and its worker's)

    def stderr(self) -> str:
        return self.err.read_text()


_started: list[Node] = []


@pytest.fixture(autouse=True)
def _no_survivors():
    """A failed test leaves no node behind (one may wait for the other at a rendezvous, or sleep
    at a kill point): each node is its own session, torchrun's worker included."""
    yield
    while _started:
        node = _started.pop()
        if node.proc.poll() is None:
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait()


def launch(launcher: str, subcommand: str, run_dir: Path, *args: str, node_args=lambda node: ()) -> list[Node]:
    """`fssam2 <subcommand>` on tiny.yaml as NODES nodes of one process each, DDP on the CPU,
    meeting at a free port of 127.0.0.1; `node_args(node)` adds arguments to one node's command."""
    port = str(free_port())
    fssam2 = ["-m", "fssam2.cli", subcommand, "--config", str(TINY), "--trainer.default_root_dir", str(run_dir)]
    fssam2 += ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "1"]
    fssam2 += ["--trainer.num_nodes", str(NODES), *args]
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCH_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC_"))
    }
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))  # killpoint
    (run_dir.parent / "tmp").mkdir(parents=True, exist_ok=True)  # what a killed process leaves, in the test's folder
    base["TMPDIR"] = str(run_dir.parent / "tmp")
    nodes = []
    for node in range(NODES):
        env = dict(base)
        if launcher == "torchrun":  # the line docs/usage.md gives, run on each node
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(NODES), "--node_rank", str(node)]
            cmd += ["--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port]
        elif launcher == "srun":  # what srun sets for task `node` of `sbatch --nodes 2 --ntasks-per-node 1`
            cmd = [sys.executable]
            env |= {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "fssam2", "SLURM_NODELIST": "127.0.0.1"}
            env |= {"SLURM_NNODES": str(NODES), "SLURM_NTASKS": str(NODES), "SLURM_NTASKS_PER_NODE": "1"}
            env |= {"SLURM_PROCID": str(node), "SLURM_NODEID": str(node), "SLURM_LOCALID": "0", "MASTER_PORT": port}
        else:  # by hand: the variables Lightning's own environment reads
            cmd = [sys.executable]
            env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node), "LOCAL_RANK": "0"}
            env |= {"WORLD_SIZE": str(NODES)}
        err = run_dir.parent / f"{run_dir.name}.node{node}.err"
        with open(err, "a") as stderr:
            proc = subprocess.Popen(
                [*cmd, *fssam2, *node_args(node)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        _started.append(Node(proc, err))
        nodes.append(_started[-1])
    return nodes


def finish(nodes: list[Node], timeout: float = 300) -> None:
    """Waits for every node to end with status 0; a node that fails fails the test at once (the
    others, waiting for it, are killed by `_no_survivors`)."""
    deadline = time.monotonic() + timeout
    while any(node.proc.poll() is None for node in nodes):
        for node in nodes:
            assert node.proc.returncode in (None, 0), node.stderr()[-3000:]
        assert time.monotonic() < deadline, f"the nodes ran over {timeout} s:\n" + nodes[0].stderr()[-3000:]
        time.sleep(0.1)
    for node in nodes:
        assert node.proc.returncode == 0, node.stderr()[-3000:]


def check_ranks(nodes: list[Node]) -> None:
    """Node n's process is global rank n of NODES, over gloo."""
    assert "distributed_backend=gloo" in nodes[0].stderr()
    for rank, node in enumerate(nodes):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/{NODES}" in node.stderr()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "srun"])  # the fit below starts by hand
def test_two_nodes_test_equals_one_process_bit_for_bit(tmp_path, trained_run, launcher):
    """The episodes are sharded by global rank, each process caches (and spills into a shared
    folder) its own features, and only global rank 0 writes: every metric, the support gap's
    included, is one process's, bit for bit, and the run folder holds one config and one result."""
    spill = tmp_path / "spill"  # on a filesystem both nodes see, as the run folder
    options = ["--ckpt_path", str(trained_run.last), *trained_run.tiny_options]
    options += ["--model.feature_cache.max_megabytes", "0.1", "--model.feature_cache.spill_dir", str(spill)]
    nodes = launch(launcher, "test", tmp_path / "two", *options)
    run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path / "one"), *options])
    finish(nodes)
    check_ranks(nodes)

    one = json.loads((tmp_path / "one" / "test_metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "test_metrics.json").read_text())
    assert one["miou"] is not None and one["support_gap"] is not None and one["gap_episodes"] == 25
    differ = {key for key in one if one[key] != two[key]}
    assert differ <= WORK_COUNTERS, {key: (one[key], two[key]) for key in differ}
    assert two["episode_images"] == one["episode_images"]  # every episode ran once
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["test_config.yaml", "test_metrics.json"]
    assert list(spill.iterdir()) == []  # each process removed its own spill folder


@pytest.mark.slow
def test_two_node_fit_killed_and_resumed_ends_as_an_uninterrupted_one(tmp_path):
    """Two fits over two nodes: A uninterrupted, B killed (both nodes) in epoch 1 and resumed with
    --ckpt_path last.ckpt, which every process reads; B ends with A's checkpoints exactly."""
    markers = [tmp_path / f"B.node{node}.killpoint" for node in range(NODES)]

    def kill_point(node: int) -> list[str]:
        init_args = {"marker": str(markers[node]), "epoch": 1, "batch": 1}
        return ["--trainer.callbacks+=" + json.dumps({"class_path": "killpoint.KillPoint", "init_args": init_args})]

    small = ("--trainer.limit_train_batches", "2", "--data.init_args.batch_size", "2")  # 2 epochs of 2 steps
    a = launch("env", "fit", tmp_path / "A", *small)
    b = launch("env", "fit", tmp_path / "B", *small, node_args=kill_point)
    deadline = time.monotonic() + 300
    while not all(marker.exists() for marker in markers):
        for node in b:
            assert node.proc.poll() is None, node.stderr()[-3000:]
        assert time.monotonic() < deadline, "B did not reach its kill point"
        time.sleep(0.05)
    assert [marker.read_text() for marker in markers] == ["3", "3"]  # 2 steps of epoch 0, 1 of epoch 1
    ckpts_a, ckpts_b = tmp_path / "A" / "checkpoints", tmp_path / "B" / "checkpoints"
    assert load(ckpts_b / "last.ckpt")["epoch"] == 0
    for node in b:
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
    b = launch("env", "fit", tmp_path / "B", *small, "--ckpt_path", str(ckpts_b / "last.ckpt"))
    finish(a)
    finish(b)
    check_ranks(b)
    assert "Restored all states" in b[0].stderr()

    assert sorted(p.name for p in ckpts_b.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("last.ckpt", "best.ckpt"):
        ckpt_a, ckpt_b = load(ckpts_a / name), load(ckpts_b / name)
        assert ckpt_a["global_step"] == ckpt_b["global_step"] and ckpt_a["epoch"] == ckpt_b["epoch"], name
        for key in ("state_dict", "optimizer_states", "lr_schedulers"):
            assert_same(ckpt_a[key], ckpt_b[key], f"{name}:{key}")
    assert load(ckpts_b / "last.ckpt")["global_step"] == 4
