# dist/ — `make install`: the tree a packager ships.
#
#   make install [PREFIX=/usr/local] [DESTDIR=] [LIBDIR=...] [SYSTEMDUNITDIR=...]
#   make uninstall (same variables)
#
#   $(BINDIR)/nestquant                       the CLI (libnestquant linked in)
#   $(LIBDIR)/libnestquant.so.$(NQ_VERSION)   soname libnestquant.so.$(NQ_SOVERSION);
#   $(LIBDIR)/libnestquant.so.0 -> ...        the soname link, for the loader
#   $(LIBDIR)/libnestquant.so -> ...0         the link name, for -lnestquant
#   $(LIBDIR)/libnestquant.a
#   $(LIBDIR)/pkgconfig/nestquant.pc
#   $(LIBDIR)/nestquant/monitor.bpf.o         the BPF object (the CLI embeds a copy)
#   $(INCLUDEDIR)/nestquant.h                 the one public header
#   $(SYSTEMDUNITDIR)/nestquant-monitor.service   ExecStart naming $(BINDIR)
#   $(MANDIR)/man1/nestquant.1                from every verb's --help
#   $(DOCDIR)/                                README.md, format/SPEC.md, docs/, examples/
#
# Nothing is stripped (packagers do that) and nothing outside DESTDIR is
# touched: no ldconfig, no systemctl.

NQ_VERSION := 0.1.0
NQ_SOVERSION := 0	# must match -soname in the top Makefile

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/nestquant
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
NQ_BPFDIR ?= $(LIBDIR)/nestquant
INSTALL ?= install

NQ_MAN := $(O)/man/nestquant.1
NQ_PC := $(O)/nestquant.pc
NQ_UNIT := $(O)/nestquant-monitor.service
# Docs keep the source tree's layout, so the README's relative links work.
NQ_DOCS := README.md format/SPEC.md $(wildcard docs/*.md docs/*.png models/README.md)

# The pc file names libdir/includedir through ${prefix} when they are under
# it, so `pkg-config --define-variable=prefix=...` relocates the whole tree.
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(patsubst $(PREFIX),$${prefix},$(1)))

# Libs.private keeps the last of repeated -l flags: static linking needs a
# library after everything that uses it (-lbpf before -lelf -lz).
nq_rev = $(if $(1),$(call nq_rev,$(wordlist 2,$(words $(1)),$(1))) $(firstword $(1)))
nq_uniq = $(if $(1),$(firstword $(1)) $(call nq_uniq,$(filter-out $(firstword $(1)),$(1))))
NQ_LIBS_PRIVATE = $(strip $(call nq_rev,$(call nq_uniq,$(call nq_rev,$(LIBNQ_LIBS)))))

.PHONY: install uninstall man
man: $(NQ_MAN)

$(NQ_MAN): $(NESTQUANT) dist/gen-man.sh
	$(call msg,MAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)dist/gen-man.sh $(NESTQUANT) $(NQ_VERSION) $@

# Depends on the variables: a new PREFIX must rewrite the file.
$(NQ_PC): dist/nestquant.pc.in FORCE
	$(Q)mkdir -p $(@D)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(call pc_rel,$(LIBDIR))|' \
		-e 's|@INCLUDEDIR@|$(call pc_rel,$(INCLUDEDIR))|' -e 's|@VERSION@|$(NQ_VERSION)|' \
		-e 's|@LIBS_PRIVATE@|$(NQ_LIBS_PRIVATE)|' $< > $@.tmp
	$(Q)if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

$(NQ_UNIT): bpf/nestquant-monitor.service FORCE
	$(Q)mkdir -p $(@D)
	$(Q)sed -e 's|/usr/local/bin/nestquant|$(BINDIR)/nestquant|g' $< > $@.tmp
	$(Q)if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

.PHONY: FORCE
FORCE:

install: $(LIBNQ_A) $(LIBNQ_SO) $(NESTQUANT) $(MONITOR_BPF_O) $(NQ_MAN) $(NQ_PC) $(NQ_UNIT)
	$(call msg,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(NQ_BPFDIR) $(DESTDIR)$(SYSTEMDUNITDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR)/examples
	$(Q)$(INSTALL) -m 0755 $(NESTQUANT) $(DESTDIR)$(BINDIR)/nestquant
	$(Q)$(INSTALL) -m 0755 $(LIBNQ_SO) $(DESTDIR)$(LIBDIR)/libnestquant.so.$(NQ_VERSION)
	$(Q)ln -sf libnestquant.so.$(NQ_VERSION) $(DESTDIR)$(LIBDIR)/libnestquant.so.$(NQ_SOVERSION)
	$(Q)ln -sf libnestquant.so.$(NQ_SOVERSION) $(DESTDIR)$(LIBDIR)/libnestquant.so
	$(Q)$(INSTALL) -m 0644 $(LIBNQ_A) $(DESTDIR)$(LIBDIR)/libnestquant.a
	$(Q)$(INSTALL) -m 0644 runtime/include/nestquant.h $(DESTDIR)$(INCLUDEDIR)/nestquant.h
	$(Q)$(INSTALL) -m 0644 $(NQ_PC) $(DESTDIR)$(PKGCONFIGDIR)/nestquant.pc
	$(Q)$(INSTALL) -m 0644 $(MONITOR_BPF_O) $(DESTDIR)$(NQ_BPFDIR)/monitor.bpf.o
	$(Q)$(INSTALL) -m 0644 $(NQ_UNIT) $(DESTDIR)$(SYSTEMDUNITDIR)/nestquant-monitor.service
	$(Q)$(INSTALL) -m 0644 $(NQ_MAN) $(DESTDIR)$(MANDIR)/man1/nestquant.1
	$(Q)for f in $(NQ_DOCS); do \
		$(INSTALL) -D -m 0644 $$f $(DESTDIR)$(DOCDIR)/$$f || exit 1; done
	$(Q)$(INSTALL) -m 0644 examples/*.c $(DESTDIR)$(DOCDIR)/examples/

uninstall:
	$(call msg,UNINSTALL,$(DESTDIR)$(PREFIX))
	$(Q)rm -f $(DESTDIR)$(BINDIR)/nestquant $(DESTDIR)$(LIBDIR)/libnestquant.so* \
		$(DESTDIR)$(LIBDIR)/libnestquant.a $(DESTDIR)$(INCLUDEDIR)/nestquant.h \
		$(DESTDIR)$(PKGCONFIGDIR)/nestquant.pc $(DESTDIR)$(NQ_BPFDIR)/monitor.bpf.o \
		$(DESTDIR)$(SYSTEMDUNITDIR)/nestquant-monitor.service \
		$(DESTDIR)$(MANDIR)/man1/nestquant.1
	$(Q)rm -rf $(DESTDIR)$(DOCDIR)
	$(Q)rmdir $(DESTDIR)$(NQ_BPFDIR) 2>/dev/null || true
