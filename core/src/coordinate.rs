//! Network coordinates (Vivaldi): placeholder, being written.
