//! Data-parallel training: the ranks of a job (`mpirun -n N nnc train ...`), each holding
//! the whole model and a shard of every global batch, and what they share. A step sums one
//! buffer over the ranks (the gradient arena, each rank's weighted by its share of the
//! batch, with a few scalars at its end: the loss, the correct count, who failed), so
//! every rank applies the same update to the same parameters. Everything else the ranks
//! must agree on (that each read the same data, that each started) is one small
//! collective at the start or the end of an epoch.
//!
//! `Comm` is what the training loop needs of a job; `Solo` is the job of one process, and
//! with the `mpi` feature `Mpi` runs over MPI (rsmpi). The loop is written once, for any
//! `Comm`: with one rank its arithmetic is exactly the single-process step's.

use std::ops::Range;

/// What training needs of the processes of a job.
pub trait Comm: std::fmt::Debug + Send + Sync {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn size(&self) -> usize;
    /// `recv` = the sum over the ranks of their `send` (of the same length on every rank).
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]);
    /// The same for f64.
    fn sum_f64(&self, send: &[f64], recv: &mut [f64]);
    /// `all` = every rank's `mine` (of the same length on every rank), in rank order.
    fn gather(&self, mine: &[u8], all: &mut [u8]);
    /// Rank 0's `bytes` on every rank (of the same length on every rank).
    fn broadcast(&self, bytes: &mut [u8]);
    /// Returns once every rank has called it.
    fn barrier(&self);
}

/// The job of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Comm for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn sum_f64(&self, send: &[f64], recv: &mut [f64]) {
        recv.copy_from_slice(send);
    }
    fn gather(&self, mine: &[u8], all: &mut [u8]) {
        all.copy_from_slice(mine);
    }
    fn broadcast(&self, _: &mut [u8]) {}
    fn barrier(&self) {}
}

/// The rows of a batch of `len` rows that `rank` of `size` takes: contiguous, in rank
/// order, sizes differing by at most one.
pub fn shard(len: usize, rank: usize, size: usize) -> Range<usize> {
    (rank * len / size)..((rank + 1) * len / size)
}

/// How many processes the launcher that started this one runs in its job, from the
/// variables mpirun (OpenMPI), mpiexec (MPICH, Intel MPI) and srun (Slurm with PMI) set;
/// `None` outside a launcher.
pub fn launched() -> Option<(usize, usize)> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok()?.parse::<usize>().ok())
    };
    let size = var(&[
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "SLURM_NTASKS",
    ])?;
    let rank = var(&[
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
    ])
    .unwrap_or(0);
    Some((rank, size))
}

/// Ranks of this job on this machine (for the default thread count), from the launcher.
pub fn local_ranks() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ]
    .iter()
    .find_map(|n| std::env::var(n).ok()?.parse::<usize>().ok())
    .unwrap_or(1)
    .max(1)
}

/// Whether this nnc was built with MPI.
pub const HAS_MPI: bool = cfg!(feature = "mpi");

/// The error of an nnc built without MPI started by a launcher with more than one
/// process: each would train its own copy of the model, silently.
pub fn without_mpi(size: usize) -> String {
    format!(
        "this nnc was built without MPI, so under mpirun each of the {size} processes would train its own copy of the model; \
         build one that trains data-parallel with `cargo build --release --features mpi` \
         (it needs an MPI and libclang: `apt-get install libopenmpi-dev openmpi-bin libclang-dev`)"
    )
}

/// Bytes of a rank's status record in `agree`.
const RECORD: usize = 1024;

/// Every rank says how it stands (`Ok(fingerprint)` of what must be the same everywhere,
/// `what` it is: the model and settings, the data; or its error); every rank learns
/// whether all stand and agree. Returns the first failing rank's error, named by rank, on
/// every rank.
pub fn agree(comm: &dyn Comm, status: Result<u64, String>, what: &str) -> Result<(), String> {
    if comm.size() == 1 {
        return status.map(|_| ());
    }
    let mut mine = [0u8; RECORD];
    match &status {
        Ok(fp) => {
            mine[0] = 1;
            mine[1..9].copy_from_slice(&fp.to_le_bytes());
        }
        Err(e) => {
            let bytes = e.as_bytes();
            let n = bytes.len().min(RECORD - 9);
            mine[1..9].copy_from_slice(&(n as u64).to_le_bytes());
            mine[9..9 + n].copy_from_slice(&bytes[..n]);
        }
    }
    let mut all = vec![0u8; RECORD * comm.size()];
    comm.gather(&mine, &mut all);
    let records: Vec<&[u8]> = all.chunks(RECORD).collect();
    let word = |r: &[u8]| u64::from_le_bytes(r[1..9].try_into().expect("8 bytes"));
    for (rank, r) in records.iter().enumerate() {
        if r[0] == 0 {
            let n = (word(r) as usize).min(RECORD - 9);
            let msg = String::from_utf8_lossy(&r[9..9 + n]);
            // Rank 0's error is the job's (most fail the same way everywhere); another
            // rank's is named.
            return Err(if rank == 0 {
                msg.into_owned()
            } else {
                format!("rank {rank} of {}: {msg}", comm.size())
            });
        }
    }
    let first = word(records[0]);
    if let Some(rank) = records.iter().position(|r| word(r) != first) {
        return Err(format!(
            "rank {rank} of {}: {what} differ from rank 0's (fingerprint {:016x} against {first:016x}); every rank must run the same command on the same files",
            comm.size(),
            word(records[rank])
        ));
    }
    Ok(())
}

/// `agree` on a result: every rank gets the first failing rank's error (as `E`), or its
/// own value when all succeeded and their fingerprints (`fp` of the value) agree. Alone,
/// the result itself, error type and all.
pub fn settle<T, E>(
    comm: &dyn Comm,
    local: Result<T, E>,
    what: &str,
    fp: impl FnOnce(&T) -> u64,
) -> Result<T, E>
where
    E: std::fmt::Display + From<String>,
{
    if comm.size() == 1 {
        return local;
    }
    let status = match &local {
        Ok(v) => Ok(fp(v)),
        Err(e) => Err(e.to_string()),
    };
    agree(comm, status, what).map_err(E::from)?;
    local
}

/// Rank 0's bytes on every rank (`Some` on rank 0).
pub fn share_bytes(comm: &dyn Comm, bytes: Option<Vec<u8>>) -> Vec<u8> {
    if comm.size() == 1 {
        return bytes.unwrap_or_default();
    }
    let mut len = (bytes.as_ref().map_or(0, |b| b.len()) as u64).to_le_bytes();
    comm.broadcast(&mut len);
    let mut buf = bytes.unwrap_or_else(|| vec![0; u64::from_le_bytes(len) as usize]);
    comm.broadcast(&mut buf);
    buf
}

/// A 64-bit FNV-1a hash, to fingerprint what every rank must share.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint(pub u64);

impl Default for Fingerprint {
    fn default() -> Fingerprint {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Mixes bytes in.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Fingerprint {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Mixes values in (their f64 bits).
    pub fn values(&mut self, v: &[f64]) -> &mut Fingerprint {
        for x in v {
            self.bytes(&x.to_bits().to_le_bytes());
        }
        self
    }
}

/// What rank 0 says if the launcher stops it mid-run (`on_stop`): set once an epoch.
#[cfg(feature = "mpi")]
static STOP_NOTE: std::sync::atomic::AtomicPtr<Vec<u8>> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Sets what rank 0 prints when the launcher stops the job because another rank died
/// (mpirun sends the survivors SIGTERM): the state of the run folder. Without MPI, nothing.
pub fn on_stop(note: &str) {
    #[cfg(feature = "mpi")]
    {
        let text = format!(
            "error: the job stopped: another rank ended (the launcher says which; its own error, if it had one, is above); {note}\n"
        );
        let new = Box::into_raw(Box::new(text.into_bytes()));
        // The old note is leaked, not freed: the handler may be reading it.
        STOP_NOTE.swap(new, std::sync::atomic::Ordering::AcqRel);
    }
    #[cfg(not(feature = "mpi"))]
    let _ = note;
}

#[cfg(feature = "mpi")]
extern "C" fn stopped(_: libc::c_int) {
    let note = STOP_NOTE.load(std::sync::atomic::Ordering::Acquire);
    // SAFETY: notes are never freed; write(2) and _exit are async-signal-safe.
    unsafe {
        if !note.is_null() {
            let bytes: &Vec<u8> = &*note;
            libc::write(2, bytes.as_ptr().cast(), bytes.len());
        }
        libc::_exit(1);
    }
}

/// Makes rank 0 say what state the run folder is in when the launcher stops the job.
#[cfg(feature = "mpi")]
pub fn report_stops() {
    on_stop("no checkpoint was written yet");
    // SAFETY: `stopped` only reads a note that is never freed and exits.
    unsafe {
        libc::signal(libc::SIGTERM, stopped as *const () as libc::sighandler_t);
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_comm::Mpi;

#[cfg(feature = "mpi")]
mod mpi_comm {
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};

    /// The job over MPI: `MPI_COMM_WORLD` of an MPI initialized for calls from the thread
    /// that made it (the training loop's; the step's threads never call MPI).
    pub struct Mpi {
        world: SimpleCommunicator,
        // Finalizes MPI when dropped, after `world`.
        _universe: Universe,
    }

    // SAFETY: MPI is initialized with `Threading::Funneled` and only the thread that
    // initialized it calls it: the loop moves the communicator nowhere else, and the
    // bound only lets `Session` (which is `Send`) hold a reference to it.
    unsafe impl Send for Mpi {}
    unsafe impl Sync for Mpi {}

    impl std::fmt::Debug for Mpi {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            use super::Comm;
            write!(f, "Mpi {{ rank {} of {} }}", self.rank(), self.size())
        }
    }

    impl Mpi {
        /// Initializes MPI (`None` when it cannot be, or was already).
        pub fn init() -> Option<Mpi> {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
            Some(Mpi {
                world: universe.world(),
                _universe: universe,
            })
        }

        /// Ends every process of the job (after an error that leaves the ranks out of
        /// step).
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }

    impl super::Comm for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn sum_f32(&self, send: &[f32], recv: &mut [f32]) {
            self.world
                .all_reduce_into(send, recv, SystemOperation::sum());
        }
        fn sum_f64(&self, send: &[f64], recv: &mut [f64]) {
            self.world
                .all_reduce_into(send, recv, SystemOperation::sum());
        }
        fn gather(&self, mine: &[u8], all: &mut [u8]) {
            self.world.all_gather_into(mine, all);
        }
        fn broadcast(&self, bytes: &mut [u8]) {
            self.world.process_at_rank(0).broadcast_into(bytes);
        }
        fn barrier(&self) {
            self.world.barrier();
        }
    }
}
