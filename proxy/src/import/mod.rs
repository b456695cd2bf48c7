//! Importer (being written).
