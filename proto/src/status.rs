//! The one table mapping rejections to `tonic::Code`, metric labels and what the
//! peer should do about them.
//!
//! The server answers a rejected request with `Status::from(Rejection)`: the code of
//! the table, the message naming the problem, and the reason label in the
//! `volley-reason` metadata entry, which the client reads back with [`reason_of`].
//! The same label goes into `volley_chunks_rejected_total{reason}`.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::TensorError;

/// Metadata key carrying a rejection's reason label.
pub const REASON_KEY: &str = "volley-reason";

/// Metadata key carrying the run's auth token on every call, as `Bearer <token>`.
pub const AUTH_KEY: &str = "authorization";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Missing or wrong auth token.
    Auth,
    /// A malformed request outside the chunk checks (e.g. an empty actor id).
    BadRequest,
    /// The actor wants to run another env than the run's.
    EnvId,
    /// A chunk from an actor id that never registered (or registered before a restart
    /// of the learner).
    UnknownActor,
    /// Another protocol version than [`crate::PROTOCOL_VERSION`].
    ProtocolVersion,
    /// A tensor the chunk must carry is absent.
    MissingTensor,
    /// A tensor of the wrong or an unknown dtype, or a bool byte other than 0 or 1.
    DType,
    /// A tensor of the wrong shape (including a step or env count other than the
    /// registration's).
    Shape,
    /// A tensor whose byte length does not match its dtype and shape.
    ByteLength,
    /// NaN or infinity in a float tensor.
    NonFinite,
    /// A discrete action outside `[0, n)`.
    ActionRange,
    /// Episode statistics that do not pair up or are not finite.
    EpisodeStats,
    /// The learner is shutting down and takes no more chunks.
    ShuttingDown,
}

/// What a client should do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Transient: reconnect with backoff and try again.
    Retry,
    /// The learner does not know this actor (it restarted): register again, then retry.
    Reregister,
    /// This chunk is bad but the next may be fine: drop it and go on.
    Drop,
    /// Retrying cannot help (configuration or a bug): stop.
    Fatal,
}

/// `(reason, code, metric label, recovery)`: the one table.
const TABLE: [(Reason, Code, &str, Recovery); 13] = [
    (Reason::Auth, Code::Unauthenticated, "auth", Recovery::Fatal),
    (
        Reason::BadRequest,
        Code::InvalidArgument,
        "bad_request",
        Recovery::Fatal,
    ),
    (
        Reason::EnvId,
        Code::FailedPrecondition,
        "env_id",
        Recovery::Fatal,
    ),
    (
        Reason::UnknownActor,
        Code::FailedPrecondition,
        "unknown_actor",
        Recovery::Reregister,
    ),
    (
        Reason::ProtocolVersion,
        Code::FailedPrecondition,
        "protocol_version",
        Recovery::Fatal,
    ),
    (
        Reason::MissingTensor,
        Code::InvalidArgument,
        "missing_tensor",
        Recovery::Fatal,
    ),
    (
        Reason::DType,
        Code::InvalidArgument,
        "dtype",
        Recovery::Fatal,
    ),
    (
        Reason::Shape,
        Code::InvalidArgument,
        "shape",
        Recovery::Fatal,
    ),
    (
        Reason::ByteLength,
        Code::InvalidArgument,
        "byte_length",
        Recovery::Fatal,
    ),
    (
        Reason::NonFinite,
        Code::InvalidArgument,
        "non_finite",
        Recovery::Drop,
    ),
    (
        Reason::ActionRange,
        Code::InvalidArgument,
        "action_range",
        Recovery::Fatal,
    ),
    (
        Reason::EpisodeStats,
        Code::InvalidArgument,
        "episode_stats",
        Recovery::Drop,
    ),
    (
        Reason::ShuttingDown,
        Code::Unavailable,
        "shutting_down",
        Recovery::Retry,
    ),
];

impl Reason {
    /// Every reason, in table order.
    pub const ALL: [Reason; 13] = [
        Reason::Auth,
        Reason::BadRequest,
        Reason::EnvId,
        Reason::UnknownActor,
        Reason::ProtocolVersion,
        Reason::MissingTensor,
        Reason::DType,
        Reason::Shape,
        Reason::ByteLength,
        Reason::NonFinite,
        Reason::ActionRange,
        Reason::EpisodeStats,
        Reason::ShuttingDown,
    ];

    fn row(self) -> (Reason, Code, &'static str, Recovery) {
        TABLE[self as usize]
    }

    /// The status code a rejection for this reason carries.
    pub fn code(self) -> Code {
        self.row().1
    }

    /// The metric label (`volley_chunks_rejected_total{reason}`) and metadata value.
    pub fn label(self) -> &'static str {
        self.row().2
    }

    /// What the client should do.
    pub fn recovery(self) -> Recovery {
        self.row().3
    }

    /// The reason whose label is `label`.
    pub fn from_label(label: &str) -> Option<Reason> {
        TABLE.iter().find(|row| row.2 == label).map(|row| row.0)
    }
}

impl From<&TensorError> for Reason {
    fn from(err: &TensorError) -> Self {
        match err {
            TensorError::ShapeOverflow { .. } => Reason::Shape,
            TensorError::ByteLength { .. } => Reason::ByteLength,
            TensorError::UnknownDType { .. }
            | TensorError::DTypeMismatch { .. }
            | TensorError::InvalidBool { .. } => Reason::DType,
        }
    }
}

/// A refused request: the status code, the metric label and a lowercase message that
/// names the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    /// Metric label, one of the table's.
    pub reason: &'static str,
    pub message: String,
}

impl Rejection {
    /// A rejection for `reason`, with the code and label of the table.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            code: reason.code(),
            reason: reason.label(),
            message: message.into(),
        }
    }

    /// A rejection for a tensor error, prefixed with the tensor's name.
    pub fn tensor(name: &str, err: &TensorError) -> Self {
        Rejection::new(Reason::from(err), format!("{name}: {err}"))
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.reason)
    }
}

impl std::error::Error for Rejection {}

impl From<Rejection> for Status {
    fn from(rejection: Rejection) -> Self {
        let mut status = Status::new(rejection.code, rejection.message);
        status
            .metadata_mut()
            .insert(REASON_KEY, MetadataValue::from_static(rejection.reason));
        status
    }
}

/// The rejection reason a server put on `status`, if any.
pub fn reason_of(status: &Status) -> Option<Reason> {
    let value = status.metadata().get(REASON_KEY)?.to_str().ok()?;
    Reason::from_label(value)
}

/// What to do after a call failed with `status`: the table's answer when the server
/// named a reason, else a judgement on the code (transport failures surface as
/// `UNAVAILABLE`, `UNKNOWN`, `INTERNAL` or `CANCELLED` and are worth a retry).
pub fn recovery(status: &Status) -> Recovery {
    if let Some(reason) = reason_of(status) {
        return reason.recovery();
    }
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::Internal
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted => Recovery::Retry,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss
        | Code::Unauthenticated => Recovery::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn the_table_is_indexed_by_reason() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].0, *reason);
            assert_eq!(Reason::from_label(reason.label()), Some(*reason));
        }
        let mut labels: Vec<_> = TABLE.iter().map(|row| row.2).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), TABLE.len());
    }

    #[test]
    fn reasons_map_to_the_documented_codes() {
        assert_eq!(Reason::UnknownActor.code(), Code::FailedPrecondition);
        assert_eq!(Reason::ProtocolVersion.code(), Code::FailedPrecondition);
        assert_eq!(Reason::Auth.code(), Code::Unauthenticated);
        for reason in [
            Reason::DType,
            Reason::Shape,
            Reason::ByteLength,
            Reason::NonFinite,
            Reason::ActionRange,
        ] {
            assert_eq!(reason.code(), Code::InvalidArgument, "{reason:?}");
        }
        assert_eq!(Reason::UnknownActor.label(), "unknown_actor");
        assert_eq!(Reason::NonFinite.label(), "non_finite");
    }

    #[test]
    fn tensor_errors_get_their_reason() {
        let err = TensorError::ByteLength {
            dtype: DType::F32,
            shape: vec![2],
            expected: 8,
            got: 7,
        };
        let rejection = Rejection::tensor("rewards", &err);
        assert_eq!(rejection.reason, "byte_length");
        assert_eq!(rejection.code, Code::InvalidArgument);
        assert!(rejection.message.starts_with("rewards: "));
        let err = TensorError::DTypeMismatch {
            expected: DType::F32,
            got: DType::U8,
        };
        assert_eq!(Reason::from(&err), Reason::DType);
    }

    #[test]
    fn the_reason_survives_the_status() {
        let status = Status::from(Rejection::new(Reason::UnknownActor, "actor a is unknown"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "actor a is unknown");
        assert_eq!(reason_of(&status), Some(Reason::UnknownActor));
        assert_eq!(recovery(&status), Recovery::Reregister);
        assert_eq!(recovery(&Status::unavailable("down")), Recovery::Retry);
        assert_eq!(recovery(&Status::invalid_argument("bad")), Recovery::Fatal);
    }
}
