//! The control plane: users, tokens, workspaces and agents.
