SUMMARY = "upkeep device agent: signed, staged, reversible OTA updates over MQTT"
DESCRIPTION = "upkeep-agent follows the release its controller publishes over \
MQTT, verifies the signed manifest, downloads the artifact in chunks, installs \
it through an install module, health-checks it and commits or rolls back."
HOMEPAGE = "https://example.invalid/upkeep"
SECTION = "admin"
# upkeep has not chosen a licence yet (debian/copyright); set LICENSE and
# LIC_FILES_CHKSUM here when it has.
LICENSE = "CLOSED"

# Point these at your copy of the repository (a bbappend is the usual place).
SRC_URI = "git://git.example.invalid/upkeep.git;protocol=https;branch=main"
SRCREV = "${AUTOREV}"
PV = "0.1.0+git${SRCPV}"
S = "${WORKDIR}/git"

inherit cmake pkgconfig systemd

DEPENDS = "cjson libuv paho-mqtt-c mbedtls zstd"

# tls:    ssl:// brokers through Paho's OpenSSL variant (about 2 MiB more
#         resident memory on the device; docs/benchmarks.md).
# static: one static executable (-DUPK_STATIC=ON); needs the -staticdev
#         archives of the dependencies in the sysroot, which OE stages.
PACKAGECONFIG ??= "tls"
PACKAGECONFIG[tls] = "-DUPK_AGENT_TLS=ON,-DUPK_AGENT_TLS=OFF,openssl"
PACKAGECONFIG[static] = "-DUPK_STATIC=ON,-DUPK_STATIC=OFF"

# Only the agent is configured: no test, host program or other part.
EXTRA_OECMAKE = "-DUPK_PARTS=agent -DUPK_TESTS=OFF -DUPK_WERROR=OFF \
                 -DUPK_SYSTEMD_UNITDIR=${systemd_system_unitdir}"

SYSTEMD_SERVICE:${PN} = "upkeep-agent.service"
# Each device needs its own /etc/upkeep/agent.json, key and password first.
SYSTEMD_AUTO_ENABLE = "disable"

# cmake --install creates /usr/lib/upkeep/modules (the agent's default
# modules_dir) and /var/lib/upkeep (its default data_dir).
FILES:${PN} += "${prefix}/lib/upkeep ${localstatedir}/lib/upkeep"
CONFFILES:${PN} = "${sysconfdir}/upkeep/agent.json"

# The ab-dir module unpacks with tar; the file module needs nothing.
RRECOMMENDS:${PN} = "tar"
