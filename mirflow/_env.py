"""Environment for worker processes; imports nothing numerical, so it can be applied before numpy loads."""

#: Environment set in every worker process before it starts.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "MALLOC_TRIM_THRESHOLD_": "65536",
}
