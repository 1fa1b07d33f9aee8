//! Remote inspection of a source into an Inventory (being written).
