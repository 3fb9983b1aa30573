# Attach to an `Array<f64>` that a Rust program made with shmkit, and read it
# with numpy, in place. Usage: python3 read_array.py NAME
import struct, sys
import numpy as np
from multiprocessing import shared_memory, resource_tracker

shm = shared_memory.SharedMemory(name=sys.argv[1])        # the Array's name
if sys.version_info < (3, 13):                              # 3.13+: SharedMemory(..., track=False)
    resource_tracker.unregister(shm._name, "shared_memory") # else Python unlinks it at exit
count, = struct.unpack_from("<Q", shm.buf, 48)             # shmkit header: elem_count
data, = struct.unpack_from("<Q", shm.buf, 72)              # shmkit header: data_offset
a = np.ndarray((count,), dtype=np.float64, buffer=shm.buf, offset=data)
print(count, a.sum())
del a
shm.close()
