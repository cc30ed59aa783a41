//! Who may sign in on the authorization server's pages, and who a grant's user is now.
//!
//! [`Accounts`] is the authorization server's view of the user directory: it checks a
//! password or an existing user token at sign-in, and looks a user up by name each time
//! one of their OAuth access tokens is used, so a user who is removed or demoted loses
//! access at once (the same per-user authorization as static tokens).

use crate::services::control::{
    BoxFuture, ControlError, ControlPlane, InMemoryControlPlane, Principal, User,
};
use std::fmt;
use std::sync::Arc;

/// The user directory as the authorization server needs it.
pub trait Accounts: Send + Sync + fmt::Debug {
    /// The user named `name` as they are now; `None` if they no longer exist.
    ///
    /// # Errors
    /// The directory is unavailable.
    fn user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<User>, ControlError>>;

    /// Whether users can have passwords here (the sign-in page offers the password form
    /// only then).
    fn passwords(&self) -> bool;

    /// The user, if `password` is theirs. Unknown users and wrong passwords are both
    /// `None`. Implementations hash with argon2id, which costs real CPU: the caller
    /// limits how many run at once and how often one user or address may try.
    ///
    /// # Errors
    /// The directory is unavailable.
    fn verify_password<'a>(
        &'a self,
        name: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>>;

    /// The user holding this user token (agent and service tokens are not users).
    ///
    /// # Errors
    /// The directory is unavailable.
    fn verify_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>>;
}

/// A user token's owner through [`ControlPlane::authenticate`].
pub(crate) async fn token_owner(
    control: &dyn ControlPlane,
    token: &str,
) -> Result<Option<User>, ControlError> {
    Ok(match control.authenticate(token).await? {
        Some(Principal::User(u)) => Some(u),
        _ => None,
    })
}

/// [`Accounts`] over the built-in control plane (configured users, tokens only: the
/// TOML configuration has no passwords).
#[derive(Debug, Clone)]
pub struct ControlAccounts {
    control: Arc<InMemoryControlPlane>,
}

impl ControlAccounts {
    /// Over `control`.
    pub fn new(control: Arc<InMemoryControlPlane>) -> Self {
        Self { control }
    }
}

impl Accounts for ControlAccounts {
    fn user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        let u = self
            .control
            .users()
            .iter()
            .find(|u| u.name == name)
            .cloned();
        Box::pin(std::future::ready(Ok(u)))
    }

    fn passwords(&self) -> bool {
        false
    }

    fn verify_password<'a>(
        &'a self,
        _name: &'a str,
        _password: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn verify_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        Box::pin(token_owner(self.control.as_ref(), token))
    }
}

/// [`Accounts`] over the control-plane store: users with a password set by
/// `agentwire admin users set-password` (argon2id) or any user token.
#[derive(Debug, Clone)]
pub struct StoreAccounts {
    store: Arc<crate::services::store::Store>,
}

impl StoreAccounts {
    /// Over `store`.
    pub fn new(store: Arc<crate::services::store::Store>) -> Self {
        Self { store }
    }
}

fn unavailable(e: crate::services::store::StoreError) -> ControlError {
    ControlError(e.to_string())
}

impl Accounts for StoreAccounts {
    fn user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        Box::pin(async move {
            match self.store.user(name).await {
                Ok(u) => Ok(Some(User {
                    name: u.name,
                    admin: u.admin,
                })),
                Err(crate::services::store::StoreError::NotFound(_)) => Ok(None),
                // A name that is not even valid names nobody.
                Err(crate::services::store::StoreError::Invalid { .. }) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn passwords(&self) -> bool {
        true
    }

    fn verify_password<'a>(
        &'a self,
        name: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        Box::pin(async move {
            match self.store.verify_password(name, password).await {
                Ok(u) => Ok(u),
                Err(crate::services::store::StoreError::Invalid { .. }) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn verify_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        Box::pin(token_owner(self.store.as_ref(), token))
    }
}
