################################################################################
#
# onair
#
################################################################################

# The source is the repository this br2-external tree lives in. Keep the
# version equal to the one in the repository's Cargo.toml (tests/image_tree.rs
# checks it).
ONAIR_VERSION = 0.1.0
ONAIR_SITE = $(realpath $(BR2_EXTERNAL_ONAIR_PATH)/..)
ONAIR_SITE_METHOD = local
ONAIR_LICENSE = MIT or Apache-2.0
# The repository has no LICENSE-* files yet: Cargo.toml carries the SPDX
# expression. Switch to LICENSE-MIT LICENSE-APACHE once they are committed.
ONAIR_LICENSE_FILES = Cargo.toml

# gstreamer-rs finds the libraries with pkg-config (PKG_CONFIG comes from
# TARGET_CONFIGURE_OPTS, which the cargo infrastructure passes to cargo).
ONAIR_DEPENDENCIES = host-pkgconf gstreamer1 gst1-plugins-base

# A local source is rsynced, not downloaded, so the cargo infrastructure's
# download post-process (which vendors the crates) never runs for it. Do not
# copy build output or developer settings into the build directory: target/
# is large and host-specific, and a developer's .cargo/config.toml (linker,
# target paths) must not leak into the cross build; the vendoring hook below
# writes the one this build uses.
ONAIR_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target \
	--exclude '/target-*' \
	--exclude /.cargo \
	--exclude /.venv \
	--exclude __pycache__

# Vendor the dependencies listed in Cargo.lock after each rsync (so a
# <pkg>-rebuild after a Cargo.lock change picks up new crates), the same
# way support/download/cargo-post-process does for tarball packages: the
# crates land in VENDOR/ and .cargo/config.toml redirects crates.io to it,
# so the build and install steps can run with --offline --locked. This step
# needs network access to crates.io unless BR_CARGO_HOME (in DL_DIR) already
# caches every crate.
#
# The rsync step runs before the package dependencies are guaranteed to be
# built, so make it wait for host-rustc (cargo) and, with per-package
# directories, bring cargo into this package's host directory first.
define ONAIR_CARGO_VENDOR
	$(call prepare-per-package-directory,$(ONAIR_FINAL_DOWNLOAD_DEPENDENCIES))
	mkdir -p $(@D)/.cargo $(BR_CARGO_HOME)
	cd $(@D) && \
		$(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		flock $(BR_CARGO_HOME)/.br-lock \
		cargo vendor --manifest-path Cargo.toml --locked VENDOR \
		> $(@D)/.cargo/config.toml.new
	mv $(@D)/.cargo/config.toml.new $(@D)/.cargo/config.toml
endef
ONAIR_POST_RSYNC_HOOKS += ONAIR_CARGO_VENDOR

$(eval $(cargo-package))

# Order-only: cargo must exist before the post-rsync hook runs.
$(ONAIR_TARGET_RSYNC): | $(ONAIR_FINAL_DOWNLOAD_DEPENDENCIES)
