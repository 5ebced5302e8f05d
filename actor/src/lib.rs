//! volley-actor library.
