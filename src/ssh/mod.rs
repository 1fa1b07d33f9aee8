//! SSH sessions to source and target hosts (being written).
