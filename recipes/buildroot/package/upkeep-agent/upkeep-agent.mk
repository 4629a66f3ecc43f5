################################################################################
#
# upkeep-agent
#
################################################################################

# Point these at your copy of the upkeep repository (or use
# UPKEEP_AGENT_OVERRIDE_SRCDIR in local.mk for a local checkout).
UPKEEP_AGENT_VERSION = main
UPKEEP_AGENT_SITE = https://git.example.invalid/upkeep.git
UPKEEP_AGENT_SITE_METHOD = git
# upkeep has not chosen a licence yet (debian/copyright).
UPKEEP_AGENT_LICENSE = PROPRIETARY

UPKEEP_AGENT_DEPENDENCIES = host-pkgconf cjson libuv paho-mqtt-c mbedtls zstd

# Only the agent: no test, host program or other part is configured.
UPKEEP_AGENT_CONF_OPTS = \
	-DUPK_PARTS=agent \
	-DUPK_TESTS=OFF \
	-DUPK_WERROR=OFF \
	-DUPK_SYSTEMD_UNITDIR=/usr/lib/systemd/system

ifeq ($(BR2_PACKAGE_OPENSSL),y)
UPKEEP_AGENT_DEPENDENCIES += openssl
UPKEEP_AGENT_CONF_OPTS += -DUPK_AGENT_TLS=ON
else
UPKEEP_AGENT_CONF_OPTS += -DUPK_AGENT_TLS=OFF
endif

ifeq ($(BR2_STATIC_LIBS),y)
UPKEEP_AGENT_CONF_OPTS += -DUPK_STATIC=ON
endif

# cmake --install puts the unit in /usr/lib/systemd/system; it is installed
# but not enabled, since each device needs its own /etc/upkeep/agent.json.
define UPKEEP_AGENT_INSTALL_INIT_SYSTEMD
	true
endef

$(eval $(cmake-package))
