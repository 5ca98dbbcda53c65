################################################################################
#
# onair
#
################################################################################

# The source is the repository this br2-external tree lives in, built from the working tree
# as it is (modified files included). Keep the version equal to the one in the repository's
# Cargo.toml (tests/image_tree.rs checks it).
ONAIR_VERSION = 0.1.0
ONAIR_REPO = $(realpath $(BR2_EXTERNAL_ONAIR_PATH)/..)
ONAIR_LICENSE = MIT or Apache-2.0
ONAIR_LICENSE_FILES = src/LICENSE-MIT src/LICENSE-APACHE

# Buildroot builds a local package from a copy of its site directory, and `make legal-info`
# archives another copy of it, taken with nothing excluded but VCS folders. The repository
# itself holds much that is neither source nor redistributable: cargo's target/ (gigabytes),
# the test receiver's .venv, a developer's .cargo/config.toml, build-image.sh's output when it
# is kept in the tree. So the site is a clean copy of the repository, made before every sync
# (ONAIR_STAGE_SOURCE): what .gitignore ignores is left out, and so is .cargo (the cross
# settings of a developer's machine must not reach this build). The crates of Cargo.lock are
# vendored into that copy (ONAIR_CARGO_VENDOR), so the build runs --offline --locked and
# legal-info saves them with the daemon's source, as it does for cargo packages that are
# downloaded as tarballs.
ONAIR_SITE = $(BUILD_DIR)/onair-$(ONAIR_VERSION).src
ONAIR_SITE_METHOD = local

ONAIR_STAGE_EXCLUSIONS = \
	$(RSYNC_VCS_EXCLUSIONS) \
	--filter=':- .gitignore' \
	--exclude /.cargo \
	--exclude /VENDOR

define ONAIR_STAGE_SOURCE
	mkdir -p $(ONAIR_SITE)
	rsync -a --delete --chmod=u=rwX,go=rX $(ONAIR_STAGE_EXCLUSIONS) \
		$(ONAIR_REPO)/ $(ONAIR_SITE)/
endef

# Vendors the crates of Cargo.lock into the clean copy, the way
# support/download/cargo-post-process does for tarball packages: they land in VENDOR/ and
# .cargo/config.toml redirects crates.io there. They come from crates.io (through the cargo
# cache in the download directory, BR_CARGO_HOME), or, for a build without internet, from
# $(ONAIR_PREFETCHED_CRATES), which `scripts/build-image.sh --download-only` fills on a
# machine with internet; it is used only while its Cargo.lock is the repository's.
#
# This runs before the package's dependencies are guaranteed to be built, so the rsync waits
# for host-rustc (cargo) below and, with per-package directories, brings cargo into this
# package's host directory first.
ONAIR_PREFETCHED_CRATES = $(DL_DIR)/onair-crates

define ONAIR_CARGO_VENDOR
	$(call prepare-per-package-directory,$(ONAIR_FINAL_DOWNLOAD_DEPENDENCIES))
	mkdir -p $(ONAIR_SITE)/.cargo $(BR_CARGO_HOME)
	if cmp -s $(ONAIR_PREFETCHED_CRATES)/Cargo.lock $(ONAIR_SITE)/Cargo.lock; then \
		echo "onair: crates from $(ONAIR_PREFETCHED_CRATES)" && \
		rsync -a --delete $(ONAIR_PREFETCHED_CRATES)/vendor/ $(ONAIR_SITE)/VENDOR/ && \
		printf '%s\n' '[source.crates-io]' 'replace-with = "vendored-sources"' '' \
			'[source.vendored-sources]' 'directory = "VENDOR"' \
			> $(ONAIR_SITE)/.cargo/config.toml.new; \
	else \
		cd $(ONAIR_SITE) && \
		$(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		flock $(BR_CARGO_HOME)/.br-lock \
		cargo vendor --locked VENDOR > $(ONAIR_SITE)/.cargo/config.toml.new; \
	fi
	mv $(ONAIR_SITE)/.cargo/config.toml.new $(ONAIR_SITE)/.cargo/config.toml
endef
ONAIR_PRE_RSYNC_HOOKS += ONAIR_STAGE_SOURCE ONAIR_CARGO_VENDOR

# The box runs the binary CI tests: Cargo.toml's [profile.release] (opt-level 3, thin LTO,
# 4 codegen units, no debug info), the profile scripts/test-cross.sh builds. Buildroot's cargo
# infrastructure overrides that profile through CARGO_PROFILE_RELEASE_* variables (no LTO, 16
# codegen units, opt-level from BR2_OPTIMIZE_*); this environment, placed right before
# `cargo` in the build and install commands, removes every one of them again.
ONAIR_CARGO_ENV = env \
	-u CARGO_PROFILE_RELEASE_OPT_LEVEL \
	-u CARGO_PROFILE_RELEASE_LTO \
	-u CARGO_PROFILE_RELEASE_CODEGEN_UNITS \
	-u CARGO_PROFILE_RELEASE_INCREMENTAL \
	-u CARGO_PROFILE_RELEASE_SPLIT_DEBUGINFO \
	-u CARGO_PROFILE_RELEASE_DEBUG \
	-u CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS \
	-u CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS

# The status socket's group (board/common/rootfs-overlay/usr/lib/sysusers.d/onair.conf
# says the same for systemd-sysusers): made at build time, as the root file system is
# read-only on the box. makeusers: no user (-), group onair-status, its GID chosen.
define ONAIR_USERS
	- - onair-status -1 * - - -
endef

# gstreamer-rs finds the libraries with pkg-config (PKG_CONFIG comes from
# TARGET_CONFIGURE_OPTS, which the cargo infrastructure passes to cargo).
ONAIR_DEPENDENCIES = host-pkgconf gstreamer1 gst1-plugins-base

$(eval $(cargo-package))

# Order-only: cargo must exist before the pre-rsync hooks run.
$(ONAIR_TARGET_RSYNC): | $(ONAIR_FINAL_DOWNLOAD_DEPENDENCIES)
