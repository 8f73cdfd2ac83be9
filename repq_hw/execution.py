"""One execution layer for the long commands: in-process, a local Dask cluster, or an existing one.

``eval --integer``, ``eval``, ``ablation``, ``golden`` and ``sweep`` hand their work to a
:class:`Runner`. It runs either here (``in_process``, ``--no-cluster``), on a ``distributed.LocalCluster``
sized to the machine (the default), or on a cluster started elsewhere (``--scheduler tcp://HOST:8786``).

Work units:

* an integer graph travels to the workers **once per configuration**, as its two files (``graph.json`` +
  ``constants.npz``, numpy only), broadcast to every worker; each worker validates it with
  :func:`repq_hw.ir.graph.load_graph` and caches the loaded graph by its IR hash;
* images are cut into shards of ``shard_size``; a task emulates one shard and returns its tensors with the
  shard's start index;
* the client merges the shards **by start index**, never by completion order. The emulator computes each
  image on its own (no op mixes images), so the merged result is bit-identical to one ``run_graph`` call
  over every image, whatever the number of workers, the shard size or the order the shards finish in;
* float and fake-quant models (torch) are broadcast once per model; their shards are whole evaluation
  batches, so each image is computed in the same batch as in a single-process run.

Dask retries a task whose worker died (the shard is recomputed from its inputs; the merge keeps one result
per start index, so nothing is lost or counted twice). A task that raises fails the run with that same
exception (Dask sends the original exception back, whose message names the file or tensor).

This module imports numpy only; ``dask.distributed`` is imported when a cluster is used, torch only by the
tasks that run a torch model.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repq_hw.errors import InputError

DEFAULT_SHARD = 64  # images per emulation task
GRAPH_CACHE_SIZE = 4  # loaded graphs a worker keeps (one per configuration of a sweep in flight)


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how work runs (the CLI's ``--scheduler``, ``--workers``, ``--no-cluster``, ``--shard-size``).

    Args:
        scheduler: address of a running Dask scheduler (``tcp://HOST:8786``); None starts a local cluster.
        workers: worker processes of the local cluster (default: one per core).
        threads: Numba/torch threads per worker (default: cores // workers, at least 1).
        in_process: run every task in this process, no Dask at all.
        shard_size: images per emulation task.
        progress: a tqdm bar over shards on stderr.
    """

    scheduler: str | None = None
    workers: int | None = None
    threads: int | None = None
    in_process: bool = False
    shard_size: int = DEFAULT_SHARD
    progress: bool = True

    def __post_init__(self):
        if self.in_process and (self.scheduler or self.workers):
            raise InputError("--no-cluster runs in this process; it cannot be combined with "
                             f"{'--scheduler' if self.scheduler else '--workers'}")
        if self.scheduler and self.workers:
            raise InputError("--workers sizes the local cluster; with --scheduler the cluster has its own "
                             "workers")
        for name in ("workers", "threads", "shard_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if self.scheduler is not None and not str(self.scheduler).startswith(("tcp://", "tls://", "inproc://")):
            raise InputError(f"--scheduler {self.scheduler!r}: expected an address such as tcp://HOST:8786")


def local_layout(cores: int, workers: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(worker processes, threads per worker) for a local cluster on ``cores`` cores such that
    workers x threads <= cores (Numba's and torch's thread pools never oversubscribe the machine).

    Default: one single-threaded process per core (the emulator's shards are independent, processes
    scale better than threads inside one GEMM at these sizes)."""
    cores = max(1, int(cores))
    n = workers or cores
    t = threads or max(1, cores // n)
    if n * t > cores:
        t = max(1, cores // n)
    return n, t


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------
# Worker side: thread settings, the graph cache, the tasks.

_GRAPHS: OrderedDict[str, object] = OrderedDict()
_GRAPH_LOCK = threading.Lock()


@dataclass(frozen=True)
class GraphPayload:
    """An integer graph as the two files of an IR folder (numpy only: no pickled objects)."""

    ir_hash: str
    files: dict  # {"graph.json": bytes, "constants.npz": bytes}

    @classmethod
    def of(cls, g) -> GraphPayload:
        from repq_hw.golden.writer import ir_files

        return cls(g.hash(), ir_files(g))


_THREADS: list[int] = []  # this worker's Numba thread count, once set_threads has run here


def set_threads(n: int) -> int:
    """This process's Numba threads for emulation tasks (and torch's, where loaded); returns n.

    Numba's count is per calling thread, and Dask runs tasks in threads of its own, so the count is
    also kept here and applied by every emulation task (:func:`_apply_threads`). (A torch task sets its
    own count, see :func:`torch_shard`.)"""
    import numba

    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    _THREADS[:] = [n]
    numba.set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


def _apply_threads() -> None:
    if _THREADS:
        import numba

        if numba.get_num_threads() != _THREADS[0]:
            numba.set_num_threads(_THREADS[0])


def worker_graph(payload: GraphPayload):
    """The loaded, validated graph of ``payload``, from this process's cache (keyed by IR hash)."""
    with _GRAPH_LOCK:
        g = _GRAPHS.get(payload.ir_hash)
        if g is not None:
            _GRAPHS.move_to_end(payload.ir_hash)
            return g
    from repq_hw.ir.graph import load_graph

    with tempfile.TemporaryDirectory(prefix="repq-hw-ir-") as d:
        for name, data in payload.files.items():
            if name not in ("graph.json", "constants.npz"):
                raise InputError(f"graph payload: unexpected file {name!r}")
            Path(d, name).write_bytes(data)
        g = load_graph(d)
    if g.hash() != payload.ir_hash:
        raise InputError(f"graph payload: IR hash {g.hash()[:16]} is not the announced "
                         f"{payload.ir_hash[:16]}")
    with _GRAPH_LOCK:
        _GRAPHS[payload.ir_hash] = g
        while len(_GRAPHS) > GRAPH_CACHE_SIZE:
            _GRAPHS.popitem(last=False)
    return g


def cached_graph_hashes() -> list[str]:
    """The IR hashes this process has cached (a test reads it on every worker)."""
    with _GRAPH_LOCK:
        return list(_GRAPHS)


def emulate_shard(payload: GraphPayload, start: int, codes: np.ndarray, backend: str = "fast",
                  keep: tuple[str, ...] | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """One emulation task: (start, {tensor: [n, ...]}) of the graph on ``codes``. ``keep``: the tensors to
    return (None: the graph outputs)."""
    from repq_hw.emu.execute import run_graph

    _apply_threads()
    g = worker_graph(payload)
    env = run_graph(g, codes, backend, keep_all=keep is not None)
    names = g.outputs if keep is None else keep
    return start, {n: env[n] for n in names}


def emulate_shard_to_dir(payload: GraphPayload, start: int, codes: np.ndarray, backend: str, keep: tuple[str, ...],
                         shard_dir: str) -> tuple[int, str]:
    """One golden-set task: emulate the shard and write its ``keep`` tensors into ``shard_dir/<start>/`` (one
    ``.npy`` per tensor, numbered in ``keep`` order), then return (start, that directory).

    The files go into a hidden temporary directory that is renamed to ``<start>`` only when complete, so a
    worker killed mid-write leaves no shard the client would read; a retried task whose twin already
    finished keeps the first copy. ``shard_dir`` lies inside the set's staging directory (it must be on a
    file system every worker shares)."""
    import shutil
    import uuid

    _, res = emulate_shard(payload, start, codes, backend, keep)
    root = Path(shard_dir)
    final = root / f"{start:010d}"
    tmp = root / f".{start:010d}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # never the parents: once the client has removed the staging directory nothing recreates it
    for i, name in enumerate(keep):
        np.save(tmp / f"{i:05d}.npy", np.ascontiguousarray(res[name]), allow_pickle=False)
    try:
        os.rename(tmp, final)
    except OSError:  # a retried twin got there first: its copy is the same bits
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return start, str(final)


class ShardedTensors:
    """Read-only ``{tensor: [B, ...] array}`` over shard directories written by :func:`emulate_shard_to_dir`:
    a tensor is assembled from its shards (in start order) when it is read, so the client never holds more
    than one stored tensor of the set at a time."""

    def __init__(self, dirs: list[str], names: tuple[str, ...]):
        self._dirs, self._index = list(dirs), {n: i for i, n in enumerate(names)}

    def __contains__(self, name) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def keys(self):
        return self._index.keys()

    def __getitem__(self, name: str) -> np.ndarray:
        i = self._index[name]
        return np.concatenate([np.load(Path(d) / f"{i:05d}.npy", allow_pickle=False) for d in self._dirs])


def torch_shard(model, start: int, batches: Sequence, threads: int) -> tuple[int, list]:
    """One torch task: the logits of each batch of a shard ((images, labels) tensors or a FolderBatch).

    Runs with ``threads`` torch threads, the count of the process that asked: torch's float reductions
    depend on the thread count, and with the same count the logits are the same bits as there."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        model.eval()
        out = []
        with torch.no_grad():
            for b in batches:
                x = b.load()[0] if isinstance(b, FolderBatch) else b[0]
                out.append(model(x))
        return start, out
    finally:
        torch.set_num_threads(old)


def ladder_shard(models: tuple, payload: GraphPayload, start: int, batches: Sequence, threads: int,
                 backend: str = "fast") -> tuple[int, dict]:
    """One fidelity-ladder task on ImageFolder batches decoded here: the float64 logits of each torch model
    (float, fake-quant, inference form) per batch, and the integer emulator's dequantized logits of the
    whole shard (its input codes from the fake-quant model's input quantizer, as in the client)."""
    import torch

    from repq_hw.fidelity import dequantize, input_codes

    names = ("float", "fq", "fq_inf")
    out = {k: [] for k in names}
    xs = []
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with torch.no_grad():
            for b in batches:
                x = b.load()[0]
                xs.append(x)
                for k, m in zip(names, models, strict=True):
                    m.eval()
                    out[k].append(m(x).double().numpy())
            codes = input_codes(models[1], torch.cat(xs))
    finally:
        torch.set_num_threads(old)
    _, res = emulate_shard(payload, start, codes, backend)
    g = worker_graph(payload)
    out["int"] = dequantize(g, g.outputs[0], res[g.outputs[0]])[:, 0, :]
    return start, out


@dataclass(frozen=True)
class FolderBatch:
    """One evaluation batch of an ImageFolder, decoded where it runs (on a worker: the folder must be
    readable there). ``transform_config``: timm's resolved data config of the model."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    transform_config: dict

    def load(self):
        """(images [n, C, H, W] float32 tensor, labels int64 tensor); ValueError naming a bad file."""
        import torch

        from repq_hw.data.imagefolder import load_images

        return load_images(self.paths, self.transform_config), torch.tensor(self.labels, dtype=torch.int64)


def check_readable(path: str) -> str | None:
    """None when ``path`` is a readable directory in this process, else the reason (run on every worker)."""
    p = Path(path)
    if not p.exists():
        return "does not exist"
    if not p.is_dir():
        return "is not a directory"
    if not os.access(p, os.R_OK | os.X_OK):
        return "is not readable"
    return None


# ---------------------------------------------------------------------------------------------------
# Client side.


def shard_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[(start, stop)] of shards of ``size`` items covering 0..n in order (the last one shorter)."""
    if n < 0 or size < 1:
        raise ValueError(f"bad shard arguments n={n}, size={size}")
    return [(i, min(i + size, n)) for i in range(0, n, size)]


class Runner:
    """A context manager that runs shards in-process or on a Dask cluster and merges them in order.

    >>> with Runner(ClusterConfig(workers=2)) as r:
    ...     logits = r.emulate(g, codes)[g.outputs[0]]
    """

    def __init__(self, cfg: ClusterConfig = ClusterConfig(), log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.client = None
        self.cluster = None
        self._payloads: dict[str, object] = {}  # IR hash -> broadcast future
        self._old_handlers: dict = {}
        self._pending_signal: int | None = None
        self._timer: threading.Timer | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Runner:
        try:
            self.start()
        except BaseException:  # Ctrl-C during start-up too: no cluster left behind
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._interrupt_reached_us()
        self.close()

    @property
    def distributed(self) -> bool:
        return self.client is not None

    def start(self) -> None:
        if self.cfg.in_process or self.client is not None:
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise InputError("the Dask execution layer needs dask[distributed] "
                             "(pip install 'dask[distributed]'); "
                             "or run with --no-cluster") from e
        import dask

        # a task whose worker dies is retried on another one (up to 3 deaths per task)
        dask.config.set({"distributed.scheduler.allowed-failures": 3})
        if self.cfg.scheduler:
            try:
                self.client = Client(self.cfg.scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise InputError(f"--scheduler {self.cfg.scheduler}: cannot connect ({e})") from None
            self.log(f"[dask] connected to {self.cfg.scheduler}: {len(self.workers())} worker(s); dashboard "
                     f"{self.client.dashboard_link}")
            self._configure_remote()
        else:
            n, t = local_layout(usable_cores(), self.cfg.workers, self.cfg.threads)
            # the workers' thread pools are set before numba/torch start in them
            env = {"NUMBA_NUM_THREADS": str(t), "OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)}
            import logging

            logging.getLogger("distributed").setLevel(logging.WARNING)  # no INFO lines of its start and close
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=":0", env=env, silence_logs=logging.WARNING)
            self.client = Client(self.cluster)
            self.client.run(set_threads, t)
            self.log(f"[dask] local cluster: {n} worker process(es) x {t} thread(s); dashboard "
                     f"{self.client.dashboard_link}")
        self._install_signals()

    def _configure_remote(self) -> None:
        """Threads per worker on a remote cluster: the host's cores shared by the workers on it."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        cores = self.client.run(usable_cores)
        per_host: dict[str, int] = {}
        for addr, w in info.items():
            per_host[w["host"]] = per_host.get(w["host"], 0) + int(w.get("nthreads", 1))
        for addr, w in info.items():
            t = max(1, cores.get(addr, 1) // per_host[w["host"]])
            self.client.run(set_threads, t, workers=[addr])

    def _install_signals(self) -> None:
        """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, which unwinds to close(): the local cluster
        and its processes are shut down.

        Python runs a signal handler wherever the main thread is, also inside a callback whose exceptions
        are ignored (the scheduler's garbage-collection monitor is one): an interrupt swallowed there is
        raised again a second later, until close() has begun."""
        if self.cluster is None or threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[s] = signal.signal(s, self._on_signal)

    def _on_signal(self, signum, frame):
        self._pending_signal = signum
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(1.0, self._resend)
        self._timer.daemon = True
        self._timer.start()
        raise KeyboardInterrupt

    def _resend(self) -> None:
        if self._pending_signal is not None and not self._closing and self.client is not None:
            os.kill(os.getpid(), self._pending_signal)

    def _interrupt_reached_us(self) -> None:
        """The KeyboardInterrupt of a signal reached this module's code (it was not swallowed): no resend."""
        self._pending_signal = None
        if self._timer is not None:
            self._timer.cancel()

    def close(self) -> None:
        """Shut the local cluster down (its worker processes included); disconnect from a remote one."""
        self._closing = True
        self._interrupt_reached_us()
        self._timer = None
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        self._payloads.clear()
        for s in self._old_handlers:  # a second Ctrl-C must not cut the shutdown short
            signal.signal(s, signal.SIG_IGN)
        try:
            if client is not None:
                client.close(timeout=10)
        finally:
            try:
                if cluster is not None:
                    cluster.close(timeout=20)
            finally:
                for s, h in self._old_handlers.items():
                    signal.signal(s, h)
                self._old_handlers.clear()
                self._closing = False

    def workers(self) -> list[str]:
        if self.client is None:
            return []
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def worker_pids(self) -> dict[str, int]:
        """{worker address: process id} (the fault test kills one of them)."""
        return self.client.run(os.getpid) if self.client is not None else {}

    # -- data checks -----------------------------------------------------------------------------
    def check_paths(self, paths: Iterable[tuple[str, str]]) -> None:
        """Every worker must be able to read each (option, directory): an InputError names the worker."""
        paths = [(o, str(Path(p).resolve())) for o, p in paths if p]
        if self.client is None or not paths:
            return
        for opt, p in paths:
            res = self.client.run(check_readable, p)
            bad = {w: why for w, why in res.items() if why}
            if bad:
                w, why = min(bad.items())
                raise InputError(f"{opt} {p}: {why} on worker {w} ({len(bad)} of {len(res)} workers); the "
                                 "workers read images themselves, so the folder must be on a path every "
                                 "worker can read (a shared file system mounted at the same path)")

    # -- running ---------------------------------------------------------------------------------
    def _payload(self, g):
        """The graph's payload (in-process) or its broadcast future, made once per configuration."""
        h = g.hash()
        got = self._payloads.get(h)
        if got is None:
            payload = GraphPayload.of(g)
            # with a cluster every worker receives the two files now; tasks refer to the future
            got = payload if self.client is None else self.client.scatter(payload, broadcast=True, hash=False)
            self._payloads[h] = got
        return got

    def release(self, g) -> None:
        """Forget a configuration's broadcast graph (the workers drop it once no task needs it)."""
        self._payloads.pop(g.hash(), None)

    def _gather(self, submit: Callable[[], list], starts: list[int], desc: str,
                on_shard: Callable[[int], None] | None = None) -> dict:
        """Wait for one future per shard start (in completion order) and return {start: result}, keeping the
        first result of a shard (a retried task that also finished is counted once); ``on_shard`` is called
        with the number of shards merged so far. Every start must have a result."""
        from tqdm.auto import tqdm

        parts: dict = {}

        def merge(start, res):
            if start in parts:
                return
            parts[start] = res
            if on_shard is not None:
                on_shard(len(parts))

        bar = tqdm(total=len(starts), desc=desc, unit="shard", disable=not self.cfg.progress, leave=False)
        try:
            if self.client is None:
                for start, res in submit():
                    merge(start, res)
                    bar.update(1)
            else:
                from distributed import as_completed

                futures = submit()
                try:
                    for fut in as_completed(futures):
                        start, res = fut.result()  # re-raises the task's own exception
                        merge(start, res)
                        bar.update(1)
                        fut.release()
                except BaseException:
                    self._interrupt_reached_us()
                    self.client.cancel(futures)
                    raise
        finally:
            bar.close()
        missing = [st for st in starts if st not in parts]
        if missing:
            raise RuntimeError(f"shards starting at {missing[:5]} returned no result")
        return parts

    def emulate(self, g, codes: np.ndarray, backend: str = "fast", keep: Sequence[str] | None = None,
                desc: str = "emulate",
                on_shard: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """``run_graph(g, codes, backend)`` in shards: the graph outputs (or the ``keep`` tensors),
        bit-identical to one call over every image.

        Args:
            g: a validated graph with one input.
            codes: the input codes [B, ...].
            backend: "fast" or "ref".
            keep: tensor names to return (default: the graph outputs).
            on_shard: called with the number of shards merged so far (tests use it to kill a worker).
        """
        codes = np.asarray(codes)
        if codes.ndim < 1 or len(codes) == 0:
            raise InputError("no images to emulate")
        keep_t = tuple(keep) if keep is not None else None
        bounds = shard_bounds(len(codes), self.cfg.shard_size)
        payload = self._payload(g)

        def submit():
            if self.client is None:
                return (emulate_shard(payload, s, codes[s:e], backend, keep_t) for s, e in bounds)
            # the shards' inputs are sent with the tasks; the graph only by reference
            return [self.client.submit(emulate_shard, payload, s, codes[s:e], backend, keep_t, pure=False)
                    for s, e in bounds]

        starts = [s for s, _ in bounds]
        return merge_parts(self._gather(submit, starts, desc, on_shard), starts)

    def emulate_into(self, g, codes: np.ndarray, shard_dir: str | Path, keep: Sequence[str], backend: str = "fast",
                     desc: str = "golden shards",
                     on_shard: Callable[[int], None] | None = None) -> ShardedTensors:
        """Emulate ``codes`` in shards whose tasks write the ``keep`` tensors into ``shard_dir`` themselves
        (:func:`emulate_shard_to_dir`); returns them as a :class:`ShardedTensors` in image order (the same
        bits as one ``run_graph`` call). With a cluster, every worker must see ``shard_dir`` (checked)."""
        codes = np.asarray(codes)
        if codes.ndim < 1 or len(codes) == 0:
            raise InputError("no images to emulate")
        keep_t = tuple(keep)
        root = Path(shard_dir)
        root.mkdir(parents=True, exist_ok=True)
        if self.client is not None:
            bad = {w: why for w, why in self.client.run(check_readable, str(root.resolve())).items() if why}
            if bad:
                w, why = min(bad.items())
                raise InputError(f"--out {root.parent.parent}: the staging directory {root} is not visible on worker "
                                 f"{w} ({why}); golden shards are written by the workers, so the output folder "
                                 "must be on a file system every worker shares, mounted at the same path")
        bounds = shard_bounds(len(codes), self.cfg.shard_size)
        payload = self._payload(g)

        def submit():
            if self.client is None:
                return (emulate_shard_to_dir(payload, s, codes[s:e], backend, keep_t, str(root)) for s, e in bounds)
            return [self.client.submit(emulate_shard_to_dir, payload, s, codes[s:e], backend, keep_t, str(root),
                                       pure=False) for s, e in bounds]

        starts = [s for s, _ in bounds]
        dirs = self._gather(submit, starts, desc, on_shard)
        return ShardedTensors([dirs[s] for s in starts], keep_t)

    def torch_logits(self, model, batches: Sequence, desc: str = "eval") -> list:
        """The logits of each (images, labels) batch through ``model`` (float or fake-quant), in batch order.
        Shards are whole batches, so every image is computed in the batch a single-process run uses, and
        with this process's torch thread count (see :func:`torch_shard`): the same bits as here."""
        batches = list(batches)
        if not batches:
            raise ValueError("evaluation data is empty")
        first = batches[0].labels if isinstance(batches[0], FolderBatch) else batches[0][1]
        bounds = shard_bounds(len(batches), max(1, self.cfg.shard_size // max(1, len(first))))
        import torch

        threads = torch.get_num_threads()

        def submit():
            if self.client is None:
                return (torch_shard(model, s, batches[s:e], threads) for s, e in bounds)
            mfut = self.client.scatter(model, broadcast=True, hash=False)  # once per model
            return [self.client.submit(torch_shard, mfut, s, batches[s:e], threads, pure=False)
                    for s, e in bounds]

        parts = self._gather(submit, [s for s, _ in bounds], desc)
        out = []
        for s, _ in bounds:
            out.extend(parts[s])
        return out

    def ladder(self, models: tuple, g, batches: Sequence, backend: str = "fast",
               desc: str = "ladder") -> dict:
        """The fidelity ladder's logits over FolderBatch items decoded on the workers (see
        :func:`ladder_shard`): {"float"/"fq"/"fq_inf": per-batch logits, "int": [n, classes]}, in order."""
        import torch

        batches = list(batches)
        threads = torch.get_num_threads()
        bounds = shard_bounds(len(batches), max(1, self.cfg.shard_size // max(1, len(batches[0].labels))))
        payload = self._payload(g)

        def submit():
            if self.client is None:
                return (ladder_shard(models, payload, s, batches[s:e], threads, backend) for s, e in bounds)
            mfut = self.client.scatter(models, broadcast=True, hash=False)  # once per configuration
            return [self.client.submit(ladder_shard, mfut, payload, s, batches[s:e], threads, backend,
                                       pure=False) for s, e in bounds]

        starts = [s for s, _ in bounds]
        parts = self._gather(submit, starts, desc)
        out = {k: [lg for s in starts for lg in parts[s][k]] for k in ("float", "fq", "fq_inf")}
        out["int"] = np.concatenate([parts[s]["int"] for s in starts])
        return out


def merge_parts(parts: dict[int, dict[str, np.ndarray]], starts: list[int]) -> dict[str, np.ndarray]:
    """Concatenate shard results in the order of their start index (never completion order)."""
    missing = [s for s in starts if s not in parts]
    if missing:
        raise RuntimeError(f"shards starting at {missing[:5]} returned no result")
    names = list(parts[starts[0]])
    return {n: np.concatenate([parts[s][n] for s in starts]) for n in names}


NO_CLUSTER_ENV = "REPQ_HW_NO_CLUSTER"  # "1": the default becomes --no-cluster (the test suite sets it)


def runner_from_args(a) -> Runner:
    """A Runner from the CLI options ``--scheduler``, ``--workers``, ``--no-cluster``, ``--shard-size``.

    Without any of the first three, a local cluster, unless ``REPQ_HW_NO_CLUSTER=1`` (where a cluster's
    start-up would dominate short runs, e.g. the test suite; the results are the same bits either way)."""
    scheduler, workers = getattr(a, "scheduler", None), getattr(a, "workers", None)
    in_process = bool(getattr(a, "no_cluster", False))
    if not (scheduler or workers or in_process):
        in_process = os.environ.get(NO_CLUSTER_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return Runner(ClusterConfig(scheduler=scheduler, workers=workers, in_process=in_process,
                                shard_size=getattr(a, "shard_size", None) or DEFAULT_SHARD,
                                progress=not getattr(a, "no_progress", False)))
