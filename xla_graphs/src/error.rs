//! The typed error every graph operation returns instead of panicking.

use crate::Shape;
use std::fmt;

/// Operand shapes as the error message lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operands(pub Vec<Shape>);

impl fmt::Display for Operands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// An op rejected its operands or attributes when it was built.
    #[error("{op} at `{path}`: {reason} (operands: {operands})")]
    Op {
        op: &'static str,
        path: String,
        operands: Operands,
        reason: String,
    },
    /// A tensor handle from one graph was passed to an op of another.
    #[error("{op} at `{path}`: operand {index} belongs to a different graph")]
    ForeignTensor {
        op: &'static str,
        path: String,
        index: usize,
    },
    /// A whole-graph request (printing, differentiation) was malformed.
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl GraphError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> GraphError {
        GraphError::Invalid {
            what,
            reason: reason.into(),
        }
    }

    /// The layer path the error happened under, when it has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            GraphError::Op { path, .. } | GraphError::ForeignTensor { path, .. } => Some(path),
            GraphError::Invalid { .. } => None,
        }
    }
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;
