//! The read models: each a fold of journal events into its own tables (see issue 8).
