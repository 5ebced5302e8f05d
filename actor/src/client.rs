//! The actor's side of `volley.v1`: connect, register, push chunks, subscribe to
//! weights, and the backoff the run loop waits with between reconnects.
//!
//! Every failure is a [`ClientError`] whose [`ClientError::recovery`] says what to
//! do: retry after a backoff (learner down or restarting), register again (the
//! learner forgot this actor), drop the chunk, or stop.

use std::time::Duration;

use rand::Rng;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};
use volley_proto::status::recovery;
use volley_proto::{
    ActionKind, Chunk, ChunkAck, DType, RegisterReply, RegisterRequest, VolleyClient, Weights,
    WeightsRequest, PROTOCOL_VERSION,
};

pub use volley_proto::status::Recovery;

/// Default limit on one gRPC message (matches the learner's default).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A failed client operation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid learner address {addr:?}: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("auth token is not a valid header value")]
    Token,
    #[error("cannot connect to the learner at {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{call} failed: {} ({:?})", status.message(), status.code())]
    Call { call: &'static str, status: Status },
    #[error("the learner sent a bad register reply: {0}")]
    BadReply(String),
}

impl ClientError {
    /// What the caller should do about this error.
    pub fn recovery(&self) -> Recovery {
        match self {
            ClientError::Address { .. } | ClientError::Token | ClientError::BadReply(_) => {
                Recovery::Fatal
            }
            ClientError::Connect { .. } => Recovery::Retry,
            ClientError::Call { status, .. } => recovery(status),
        }
    }

    /// Whether trying again later (after a backoff, maybe a new registration) can
    /// succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.recovery(), Recovery::Retry | Recovery::Reregister)
    }

    /// The gRPC status of a failed call, if the call got that far.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Call { status, .. } => Some(status),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// Connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Token of the run; empty: none.
    pub auth_token: String,
    pub connect_timeout: Duration,
    /// Largest gRPC message sent or accepted.
    pub max_message_bytes: usize,
    /// HTTP/2 flow-control window per stream (a chunk is tens of MB).
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection.
    pub connection_window_bytes: u32,
    /// HTTP/2 keepalive ping interval, to notice a learner that vanished or a link
    /// that went dead (TCP alone would wait minutes).
    pub keepalive: Option<Duration>,
    /// How long a keepalive ping may go unanswered before the connection counts as
    /// dead: a dead link is noticed within `keepalive + keepalive_timeout`.
    pub keepalive_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            auth_token: String::new(),
            connect_timeout: Duration::from_secs(5),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            stream_window_bytes: 16 << 20,
            connection_window_bytes: 64 << 20,
            keepalive: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection to the learner. Cheap to clone; clones share the HTTP/2 connection,
/// so several pushes can be in flight at once. After the connection drops, calls fail
/// with a retryable error and the channel reconnects on the next call.
#[derive(Debug, Clone)]
pub struct Client {
    inner: VolleyClient<Channel>,
    addr: String,
    /// `Bearer <token>`, sent with every call; `None` without a token.
    auth: Option<MetadataValue<Ascii>>,
    auth_token: String,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`) with default options.
    pub async fn connect(addr: &str) -> ClientResult<Client> {
        Client::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects to `addr` with `options`.
    pub async fn connect_with(addr: &str, options: ClientOptions) -> ClientResult<Client> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let address_error = |source| ClientError::Address {
            addr: addr.to_string(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(address_error)?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(options.stream_window_bytes)
            .initial_connection_window_size(options.connection_window_bytes);
        if let Some(interval) = options.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(options.keepalive_timeout)
                .keep_alive_while_idle(true);
        }
        let auth = if options.auth_token.is_empty() {
            None
        } else {
            let value = MetadataValue::try_from(format!("Bearer {}", options.auth_token))
                .map_err(|_| ClientError::Token)?;
            Some(value)
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let inner = VolleyClient::new(channel)
            .max_decoding_message_size(options.max_message_bytes)
            .max_encoding_message_size(options.max_message_bytes);
        Ok(Client {
            inner,
            addr: addr.to_string(),
            auth,
            auth_token: options.auth_token,
        })
    }

    /// The address this client connects to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(auth) = &self.auth {
            request
                .metadata_mut()
                .insert(volley_proto::status::AUTH_KEY, auth.clone());
        }
        request
    }

    /// Registers an actor for the run and returns the run's settings. Unset fields
    /// are filled in: the protocol version (0), the auth token (empty: the one of
    /// [`ClientOptions`]) and the hostname. An empty `env_id` accepts the run's env.
    /// Registering the same id again replaces the old registration.
    pub async fn register(&self, mut request: RegisterRequest) -> ClientResult<RegisterReply> {
        if request.protocol_version == 0 {
            request.protocol_version = PROTOCOL_VERSION;
        }
        if request.auth_token.is_empty() {
            request.auth_token.clone_from(&self.auth_token);
        }
        if request.hostname.is_none() {
            request.hostname = hostname();
        }
        let reply = self
            .inner
            .clone()
            .register(self.request(request))
            .await
            .map_err(|status| ClientError::Call {
                call: "register",
                status,
            })?
            .into_inner();
        check_reply(&reply)?;
        Ok(reply)
    }

    /// Pushes one chunk (a `protocol_version` of 0 is set to this build's); returns
    /// once the chunk is in the learner's training queue.
    pub async fn push(&self, mut chunk: Chunk) -> ClientResult<ChunkAck> {
        if chunk.protocol_version == 0 {
            chunk.protocol_version = PROTOCOL_VERSION;
        }
        self.inner
            .clone()
            .push_chunk(self.request(chunk))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ClientError::Call {
                call: "push_chunk",
                status,
            })
    }

    /// Subscribes to the weights: the stream yields the newest version newer than
    /// `have_version` (0: any), then every newer one; versions the actor was too busy
    /// to take are skipped.
    pub async fn subscribe_weights(
        &self,
        actor_id: &str,
        have_version: u64,
    ) -> ClientResult<WeightsStream> {
        let message = WeightsRequest {
            actor_id: actor_id.to_string(),
            have_version,
        };
        let inner = self
            .inner
            .clone()
            .subscribe_weights(self.request(message))
            .await
            .map_err(|status| ClientError::Call {
                call: "subscribe_weights",
                status,
            })?
            .into_inner();
        Ok(WeightsStream { inner })
    }
}

/// The learner's weight versions, newest first then as they appear.
#[derive(Debug)]
pub struct WeightsStream {
    inner: Streaming<Weights>,
}

impl WeightsStream {
    /// The next version; `Ok(None)` when the learner closed the stream (it is
    /// shutting down: reconnect with backoff).
    pub async fn message(&mut self) -> ClientResult<Option<Weights>> {
        self.inner
            .message()
            .await
            .map_err(|status| ClientError::Call {
                call: "subscribe_weights",
                status,
            })
    }
}

/// Checks the enums of a register reply, so the run loop can trust them.
fn check_reply(reply: &RegisterReply) -> ClientResult<()> {
    DType::from_wire(reply.obs_dtype)
        .map_err(|err| ClientError::BadReply(format!("obs dtype: {err}")))?;
    match ActionKind::try_from(reply.action_kind) {
        Ok(ActionKind::Discrete | ActionKind::Continuous) => {}
        Ok(ActionKind::Parameterised) if reply.action_params > 0 => {}
        Ok(ActionKind::Parameterised) => {
            return Err(ClientError::BadReply(
                "parameterised actions without parameters (action_params = 0)".into(),
            ))
        }
        _ => {
            return Err(ClientError::BadReply(format!(
                "unknown action kind {}",
                reply.action_kind
            )))
        }
    }
    if reply.num_envs == 0 || reply.chunk_steps == 0 || reply.action_dim == 0 {
        return Err(ClientError::BadReply(
            "num_envs, chunk_steps and action_dim must be at least 1".into(),
        ));
    }
    Ok(())
}

/// This machine's name, for the learner's logs.
fn hostname() -> Option<String> {
    if let Ok(name) = std::env::var("HOSTNAME") {
        if !name.is_empty() {
            return Some(name);
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// Exponential backoff with jitter for reconnecting: 100 ms doubling up to 10 s by
/// default; each delay is drawn uniformly from `[d/2, d]` so restarted actors do not
/// reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The un-jittered delay of the next wait.
    current: Duration,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// 100 ms doubling up to 10 s.
    pub fn new() -> Backoff {
        Backoff::with_limits(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Delays start at `initial` and double up to `max`.
    pub fn with_limits(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            attempts: 0,
        }
    }

    /// The next delay (jittered), advancing the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let full = self.current;
        self.current = (self.current * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let half = full / 2;
        let jitter = rand::rng().random_range(0.0..=1.0f64);
        half + half.mul_f64(jitter) + (full - half * 2)
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        let delay = self.next_delay();
        tokio::time::sleep(delay).await;
    }

    /// Waits since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let expected = b.current;
            let d = b.next_delay();
            assert!(d >= expected / 2 && d <= expected, "{d:?} vs {expected:?}");
            ceilings.push(expected.as_millis());
        }
        assert_eq!(
            ceilings,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn errors_say_whether_to_retry() {
        let call = |status| ClientError::Call {
            call: "push_chunk",
            status,
        };
        assert!(call(Status::unavailable("connection refused")).is_retryable());
        assert!(!call(Status::invalid_argument("bad shape")).is_retryable());
        assert_eq!(ClientError::Token.recovery(), Recovery::Fatal);
        assert_eq!(
            ClientError::BadReply(String::new()).recovery(),
            Recovery::Fatal
        );
    }

    #[tokio::test]
    async fn connecting_to_nothing_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let options = ClientOptions {
            connect_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        };
        let err = Client::connect_with(&addr.to_string(), options)
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.is_retryable());
        let err = Client::connect("not a uri ::")
            .await
            .expect_err("bad address");
        assert_eq!(err.recovery(), Recovery::Fatal, "{err}");
    }
}
