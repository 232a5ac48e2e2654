//! The service layer's one error type and its single mapping to HTTP and to the JSON
//! error envelope that REST, MCP and the CLI all show.

use axum::http::StatusCode;
use serde::Serialize;

/// What went wrong in a service call, phrased for whoever made the call.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input is not acceptable; nothing was changed.
    #[error("{message}")]
    Invalid {
        /// The parameter at fault.
        field: &'static str,
        /// What is wrong and what to do instead.
        message: String,
    },
    /// A named thing does not exist in the caller's org.
    #[error("{message}")]
    NotFound {
        /// What is wrong and what exists instead.
        message: String,
    },
    /// The request clashes with current state (a duplicate name, a finished deployment).
    #[error("{message}")]
    Conflict {
        /// What clashes and what to do.
        message: String,
    },
    /// The caller is not authenticated; says nothing about why.
    #[error("missing or invalid API key: send 'Authorization: Bearer <key>'")]
    Unauthorized,
    /// Authenticated, but the key's role may not do this.
    #[error("{message}")]
    Forbidden {
        /// What was refused and who may do it.
        message: String,
    },
    /// A body or archive over its size bound.
    #[error("{message}")]
    TooLarge {
        /// Which bound was crossed.
        message: String,
    },
    /// A bug or an outage on our side; details go to the server log, not the caller.
    /// Too many failed authentications from this client: refused before checking.
    #[error(
        "too many failed attempts to authenticate from this address; try again in {} s",
        crate::throttle::retry_after_secs(*retry_after)
    )]
    RateLimited {
        /// How long until attempts are checked again.
        retry_after: std::time::Duration,
    },
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// Shorthand for service results.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// An invalid-parameter error.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
    /// A not-found error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound {
            message: message.into(),
        }
    }
    /// A conflict error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_argument",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::TooLarge { .. } => "too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal",
        }
    }

    /// The one HTTP status for each kind.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON envelope. Internal errors are logged once here and shown without detail.
    pub fn envelope(&self) -> ErrorEnvelope {
        let message = match self {
            Self::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "internal error");
                "internal error; the server log has details".to_string()
            }
            other => other.to_string(),
        };
        let field = match self {
            Self::Invalid { field, .. } => Some(*field),
            _ => None,
        };
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code(),
                message,
                field,
            },
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(err.into())
    }
}

/// `{"error": {"code", "message", "field"?}}`
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// Body of [`ErrorEnvelope`].
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Stable code (`not_found`, `invalid_argument`, …).
    pub code: &'static str,
    /// Human and agent readable: what was wrong and what to do next.
    pub message: String,
    /// The parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}
