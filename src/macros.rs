//! The chained region setters every builder shares.

/// Adds the [`RegionOptions`](crate::region::RegionOptions) setters to a
/// builder that has an `opts: RegionOptions` field.
macro_rules! region_setters {
    () => {
        /// Use the POSIX shared-memory name `name` (see [`RegionOptions::name`](crate::region::RegionOptions::name)).
        #[must_use]
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.opts = self.opts.name(name);
            self
        }
        /// Use a fresh random name `shmkit-<hex>` (see [`RegionOptions::random_name`](crate::region::RegionOptions::random_name)).
        #[must_use]
        pub fn random_name(mut self) -> Self {
            self.opts = self.opts.random_name();
            self
        }
        /// Use an anonymous memfd (the default).
        #[must_use]
        pub fn anonymous(mut self) -> Self {
            self.opts = self.opts.anonymous();
            self
        }
        /// Back the region by a file (see [`RegionOptions::file`](crate::region::RegionOptions::file)).
        #[must_use]
        pub fn file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
            self.opts = self.opts.file(path);
            self
        }
        /// Permission bits (default `0o600`).
        #[must_use]
        pub fn mode(mut self, mode: u32) -> Self {
            self.opts = self.opts.mode(mode);
            self
        }
        /// Reserve and touch all pages at creation (see [`RegionOptions::populate`](crate::region::RegionOptions::populate)).
        #[must_use]
        pub fn populate(mut self, yes: bool) -> Self {
            self.opts = self.opts.populate(yes);
            self
        }
        /// Reserve the pages in /dev/shm (or the file's filesystem) at
        /// creation without touching them: on by default for named and file
        /// regions; `false` opts out (see
        /// [`RegionOptions::reserve`](crate::region::RegionOptions::reserve)).
        #[must_use]
        pub fn reserve(mut self, yes: bool) -> Self {
            self.opts = self.opts.reserve(yes);
            self
        }
        /// How long `open` waits for the creator to publish (default 1 s).
        #[must_use]
        pub fn open_timeout(mut self, t: std::time::Duration) -> Self {
            self.opts = self.opts.open_timeout(t);
            self
        }
        /// Accept a segment owned by another uid.
        #[must_use]
        pub fn allow_foreign_owner(mut self, yes: bool) -> Self {
            self.opts = self.opts.allow_foreign_owner(yes);
            self
        }
        /// Whether the creator unlinks the name on drop (default `true`).
        #[must_use]
        pub fn unlink_on_drop(mut self, yes: bool) -> Self {
            self.opts = self.opts.unlink_on_drop(yes);
            self
        }
        /// Identify the element type by a tag instead of its Rust type name.
        #[must_use]
        pub fn type_tag(mut self, tag: impl Into<String>) -> Self {
            self.opts = self.opts.type_tag(tag);
            self
        }
        /// Replace all region options at once.
        #[must_use]
        pub fn options(mut self, opts: crate::region::RegionOptions) -> Self {
            self.opts = opts;
            self
        }
    };
}
