"""Data-parallel training over MPI: `mpiexec -n 4 minicaps train ...` (pip install
'minicaps[mpi]'); with --gpu, one GPU per rank and the gradients summed over NCCL.

Every rank builds the same network (rank 0's weights are broadcast once, so ranks start
equal even where their arithmetic rounds differently), draws the same global batch from
the same generator, augments all of it, and computes the gradients of its own contiguous
share. The loss is a mean over the batch, so a rank with b of the B images scales its
gradients by b / B: their sum over ranks is the gradient of the global batch's mean loss,
uneven shares included. One Allreduce sums all the gradients, the loss and the hits in
one flat buffer, and every rank takes the same optimizer step. Rank 0 alone reports and
writes; evaluation is split over the ranks and gathered.

Which process joins: one started by an MPI launcher that says it started more than one,
by the variables MPICH and Intel MPI (PMI_SIZE), Open MPI (OMPI_COMM_WORLD_SIZE) and
MVAPICH (MV2_COMM_WORLD_SIZE) set. Only such a process imports mpi4py, so `minicaps train`
alone needs none of it.

Failures. Until the ranks have compared their options and data (`agree`, before the first
step), a rank that fails joins that comparison with its error instead, so every rank
ends together: rank 0 raises the first failure (one line), the others exit quietly with
status 1. After it, a rank that fails prints one line and aborts the MPI job, which ends
every rank; the checkpoints are written atomically by rank 0, so the last whole one stays.
"""
import dataclasses
import json
import os
import sys
import time
import zlib
from contextlib import contextmanager, nullcontext

import numpy as np

from ..backend import get_array_module, require_gpu, to_host
from ..errors import MinicapsError

# How a launcher tells a process how many it started and which it is (module docstring).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
# A rank other than 0 that meets a MinicapsError during training waits this long before it
# aborts the job: such errors (a non-finite loss) come from state every rank shares, so
# rank 0 meets the same one at the same step, and its line should be the one printed.
LEAD_GRACE_S = 10.0
# A rank's last line goes through the launcher (mpiexec forwards each rank's stderr), and
# an abort ends the launcher too: a pause after the line gives it time to be forwarded.
# (Once in about 35 runs of the test, MPICH's Hydra 5.0.2 dropped it without one.)
FORWARD_S = 0.5


def launched_size(environ=None):
    """How many processes the MPI launcher of this one started (1 when none did)."""
    return _launcher_number(SIZE_VARIABLES, 1, environ)


def reports(environ=None):
    """Whether this process is the one that tells the user how a run went: a process on
    its own, or rank 0 of an MPI run."""
    return launched_size(environ) <= 1 or _launcher_number(RANK_VARIABLES, 0, environ) == 0


def _launcher_number(names, default, environ):
    environ = os.environ if environ is None else environ
    for name in names:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default


def gpu_for(local_rank, device_count):
    """The device of a rank: its rank among the ranks of its machine, modulo the devices
    it sees (one each while there are enough; where the launcher gave each rank its own
    device through CUDA_VISIBLE_DEVICES, that one)."""
    if device_count < 1:
        raise MinicapsError("--gpu: CuPy finds no CUDA device")
    return local_rank % device_count


def join():
    """This process's part in the run: `Alone()`, or under an MPI launcher that started
    more than one process, its `Rank` (mpi4py imported and MPI started here)."""
    size = launched_size()
    if size <= 1:
        return Alone()
    try:
        from mpi4py import MPI
    except ImportError:
        raise MinicapsError(f"started as one of {size} processes by an MPI launcher, which "
                            "needs mpi4py: pip install 'minicaps[mpi]'") from None
    return Rank(MPI)


def one_line(error):
    """What a user is told of an exception, in one line."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    text = " ".join(str(error).split())
    return text if isinstance(error, MinicapsError) else f"{type(error).__name__}: {text}"


def fingerprint(config, model_config, dataset, epoch):
    """(options, data): checksums of what every rank must share. The data path is left out
    of the options (machines may keep the data in different places): its content counts.
    So is the run folder, which rank 0 alone writes (its default follows the data's name)."""
    options = {k: v for k, v in config.to_json().items() if k not in ("data", "out")}
    text = json.dumps([options, dataclasses.asdict(model_config), epoch], sort_keys=True,
                      default=str)
    data = zlib.crc32(json.dumps(dataset.classes).encode())
    for field in dataclasses.fields(dataset):
        array = getattr(dataset, field.name)
        if isinstance(array, np.ndarray):
            data = zlib.crc32(f"{field.name}{array.shape}{array.dtype}".encode(), data)
            data = zlib.crc32(np.ascontiguousarray(array).view(np.uint8).reshape(-1), data)
    return zlib.crc32(text.encode()), data


class Alone:
    """A run in one process: every hook of the trainer leaves it as it was."""
    rank, size, lead, description = 0, 1, True, ""

    def guard(self):
        return nullcontext()

    def use_gpu(self):
        require_gpu()

    def agree(self, fingerprint):
        pass

    def same_start(self, params):
        pass

    def batch_gradients(self, work, x, y, params):
        """work(x, y) -> (loss, grads, hits) of the batch."""
        return work(x, y)

    def spread(self, net):
        return net

    def check_same_weights(self, params, epoch):
        pass


class Rank(Alone):
    """One rank of an MPI run (see the module docstring)."""

    def __init__(self, MPI):
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.lead = self.rank == 0
        # Collective, so here where no rank can have failed yet.
        self.local_rank = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.description = f", data parallel over {self.size} MPI ranks"
        self.agreed = False
        self.nccl = None
        self._buffer = None

    # -- failures

    @contextmanager
    def guard(self):
        """Ends every rank together when one fails (module docstring)."""
        try:
            yield
        except _Agreed as ended:
            self._end_together(*ended.args)
        except BaseException as error:
            if self.agreed:
                self._abort(error)
            self._end_together(*self._first_failure(error, None))

    def _first_failure(self, error, fingerprint):
        """Every rank's outcome of its setup, gathered (the failing ranks' and `agree`'s
        one collective): (rank, message, own error) of the first failure, or None."""
        outcomes = self.comm.allgather((None if error is None else one_line(error),
                                        fingerprint))
        self.agreed = True
        failed = [r for r, (message, _) in enumerate(outcomes) if message is not None]
        if failed:
            return failed[0], outcomes[failed[0]][0], error
        prints = [p for _, p in outcomes]
        for part, what in ((0, "options"), (1, "data")):
            other = next((r for r, p in enumerate(prints) if p[part] != prints[0][part]), None)
            if other is not None:
                return 0, (f"rank {other} of {self.size} was started with other {what} than "
                           f"rank 0 (each rank checksums its {what}): give every rank the "
                           "same"), None
        return None

    def _end_together(self, rank, message, error):
        if not self.lead:
            raise SystemExit(1)
        if rank == 0 and error is not None:
            raise error
        prefix = f"rank {rank} of {self.size}: " if rank else ""
        raise MinicapsError(prefix + message) from None

    def _abort(self, error):
        if not self.lead and isinstance(error, (MinicapsError, KeyboardInterrupt)):
            time.sleep(LEAD_GRACE_S)  # rank 0 meets it too and ends the job first
        prefix = f"rank {self.rank} of {self.size}: " if self.rank else ""
        print(f"minicaps: error: {prefix}{one_line(error)}", file=sys.stderr, flush=True)
        time.sleep(FORWARD_S)
        self.comm.Abort(1)

    def agree(self, fingerprint):
        """Compare every rank's fingerprint (and learn of any rank's failure) before the
        first step; refuses ranks with other options or data than rank 0."""
        failure = self._first_failure(None, fingerprint)
        if failure is not None:
            raise _Agreed(*failure)

    # -- devices and sums

    def use_gpu(self):
        """Put this rank on its GPU (`gpu_for`), before anything is allocated there."""
        cupy = require_gpu()
        from cupy.cuda import nccl
        if not nccl.available:
            raise MinicapsError("--gpu under MPI sums the gradients over NCCL, which CuPy "
                                "does not find (CuPy's install guide: Additional CUDA "
                                "Libraries)")
        cupy.cuda.Device(gpu_for(self.local_rank, cupy.cuda.runtime.getDeviceCount())).use()

    def _flat(self, params):
        """The step's buffer: every parameter's gradient, then the loss and the hits;
        made once, of the parameters' dtype, on their device."""
        size = sum(p.size for p in params.values()) + 2
        if self._buffer is None or self._buffer.size != size:
            first = next(iter(params.values()))
            self._buffer = get_array_module(first).zeros(size, first.dtype)
        views, start = {}, 0
        for name, p in params.items():
            views[name] = self._buffer[start:start + p.size].reshape(p.shape)
            start += p.size
        return self._buffer, views

    def _sum(self, buffer):
        """Sum `buffer` over the ranks, in place: NCCL for GPU arrays, MPI for host ones."""
        if get_array_module(buffer) is np:
            self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
            return
        nccl, stream = self._nccl(buffer)
        self.nccl.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size,
                            _nccl_type(nccl, buffer.dtype), nccl.NCCL_SUM, stream.ptr)

    def _nccl(self, buffer):
        """(cupy.cuda.nccl, the current stream), the NCCL communicator made on first use
        (a collective: every rank gets here at the same step)."""
        import cupy
        from cupy.cuda import nccl
        if self.nccl is None:
            uid = self.comm.bcast(nccl.get_unique_id() if self.lead else None, root=0)
            self.nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        return nccl, cupy.cuda.get_current_stream()

    def same_start(self, params):
        """Give every rank rank 0's weights (in place)."""
        buffer, views = self._flat(params)
        for name, p in params.items():
            views[name][...] = p
        if get_array_module(buffer) is np:
            self.comm.Bcast(buffer, root=0)
        else:
            nccl, stream = self._nccl(buffer)
            self.nccl.bcast(buffer.data.ptr, buffer.size, _nccl_type(nccl, buffer.dtype), 0,
                            stream.ptr)
        for name, p in params.items():
            p[...] = views[name]

    def batch_gradients(self, work, x, y, params):
        """(loss, grads, hits) of the global batch x, y: work(x, y) on this rank's share,
        weighted by its fraction of the batch, summed over the ranks. The gradients are
        views of a buffer the next call overwrites: take the step before it."""
        mine = self.share(len(x))
        buffer, views = self._flat(params)
        if mine.stop > mine.start:
            loss, grads, hits = work(x[mine], y[mine])
            weight = (mine.stop - mine.start) / len(x)
            xp = get_array_module(buffer)
            for name, view in views.items():
                xp.multiply(grads[name], weight, out=view)
            buffer[-2] = loss * weight
            buffer[-1] = hits
        else:  # a last batch smaller than the ranks: this one has nothing to add
            buffer[...] = 0
        self._sum(buffer)
        return buffer[-2].copy(), views, buffer[-1].copy()

    def share(self, n):
        """This rank's slice of n items: contiguous, sizes differing by at most one."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def spread(self, net):
        return _SharedPredictions(net, self)

    def check_same_weights(self, params, epoch):
        """Refuse to go on if the ranks' weights have come apart (they cannot while every
        rank receives the same sums)."""
        digest = 0
        for p in params.values():
            digest = zlib.crc32(np.ascontiguousarray(to_host(p)).view(np.uint8).reshape(-1),
                                digest)
        digests = self.comm.allgather(digest)
        if len(set(digests)) > 1:
            raise MinicapsError(f"after epoch {epoch} the ranks' weights differ: their "
                                "gradient sums were not the same on every rank")


class _Agreed(Exception):
    """The outcome of `agree` that ends every rank: (rank, message, that rank's error)."""


class _SharedPredictions:
    """A network for evaluate(): each rank predicts its share of every batch, and every
    rank gets the predictions of the whole batch (as host arrays)."""

    def __init__(self, net, world):
        self.net, self.world, self.config = net, world, net.config

    def predict(self, x):
        mine = self.world.share(len(x))
        part = to_host(self.net.predict(x[mine])) if mine.stop > mine.start else None
        return np.concatenate([p for p in self.world.comm.allgather(part) if p is not None])


def _nccl_type(nccl, dtype):
    return {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}[np.dtype(dtype).name]
