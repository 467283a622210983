//! The store's own threads run under `SCHED_BATCH`.
//!
//! With the default policy a thread that wakes up preempts the running one.
//! When request handling and the writer share a core (one vCPU, or a CPU limit
//! of one), every queued command woke the writer, which took it away from the
//! request handler to commit a batch of one or two: twice the fsyncs and
//! context switches. A batch thread does not preempt on wakeup; it runs when
//! the handler blocks or its slice ends, and then finds the whole queue. With
//! cores to spare it changes nothing.

/// Applies the policy to the calling thread. Failure only costs speed, so it is
/// logged, not returned.
pub(super) fn enter() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the duration of the call;
        // pid 0 is the calling thread. Moving from SCHED_OTHER to SCHED_BATCH
        // needs no privilege.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not switch a store thread to SCHED_BATCH");
        }
    }
}
