//! Placeholder: the load generator lands with the performance issue.
