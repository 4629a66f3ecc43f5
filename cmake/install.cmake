# `cmake --install` (and the Debian packages, debian/): each part built puts
# its program, example configuration and systemd unit in FHS places.
#   agent        bin/upkeep-agent, /etc/upkeep/agent.json (example),
#                lib/systemd/system/upkeep-agent.service, lib/upkeep/modules/,
#                /var/lib/upkeep
#   broker-plugin  lib/<multiarch>/mosquitto/upkeep_broker.so,
#                /etc/upkeep/upkeep-broker.json (example)
#   controller   bin/upkeep, /etc/upkeep/serve.json,
#                lib/systemd/system/upkeep.service
# With prefix /usr, GNUInstallDirs puts the configuration in /etc and the
# state in /var.
include(GNUInstallDirs)
set(UPK_CONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR}/upkeep)
set(UPK_SYSTEMD_UNITDIR "" CACHE PATH "where systemd units go (default: systemd.pc's, else PREFIX/lib/systemd/system)")
if(NOT UPK_SYSTEMD_UNITDIR)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND AND NOT CMAKE_CROSSCOMPILING)
    pkg_get_variable(upk_unitdir systemd systemdsystemunitdir)
  endif()
  if(upk_unitdir AND CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(UPK_SYSTEMD_UNITDIR ${upk_unitdir})
  else()
    set(UPK_SYSTEMD_UNITDIR ${CMAKE_INSTALL_PREFIX}/lib/systemd/system)
  endif()
endif()
set(UPK_MOSQUITTO_PLUGIN_DIR ${CMAKE_INSTALL_LIBDIR}/mosquitto CACHE PATH
    "where upkeep_broker.so goes (beside Debian's own mosquitto plugins' directory)")

if(TARGET upkeep-agent)
  # install(TARGETS upkeep-agent) is in agent/CMakeLists.txt.
  configure_file(${PROJECT_SOURCE_DIR}/packaging/systemd/upkeep-agent.service.in
                 ${PROJECT_BINARY_DIR}/packaging/upkeep-agent.service @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/packaging/upkeep-agent.service
          DESTINATION ${UPK_SYSTEMD_UNITDIR} COMPONENT agent)
  install(FILES ${PROJECT_SOURCE_DIR}/examples/agent/agent.json DESTINATION ${UPK_CONFDIR}
          COMPONENT agent)
  install(DIRECTORY DESTINATION ${CMAKE_INSTALL_PREFIX}/lib/upkeep/modules COMPONENT agent)
  install(DIRECTORY DESTINATION ${CMAKE_INSTALL_FULL_LOCALSTATEDIR}/lib/upkeep COMPONENT agent)
  install(FILES ${PROJECT_SOURCE_DIR}/docs/agent.md DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/upkeep-agent
          COMPONENT agent)
endif()

if(TARGET upkeep_broker)
  install(TARGETS upkeep_broker LIBRARY DESTINATION ${UPK_MOSQUITTO_PLUGIN_DIR}
          COMPONENT broker-plugin)
  install(FILES ${PROJECT_SOURCE_DIR}/examples/broker/upkeep-broker.json DESTINATION ${UPK_CONFDIR}
          COMPONENT broker-plugin)
endif()

if(TARGET upkeep)
  install(TARGETS upkeep RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT controller)
  configure_file(${PROJECT_SOURCE_DIR}/packaging/systemd/upkeep.service.in
                 ${PROJECT_BINARY_DIR}/packaging/upkeep.service @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/packaging/upkeep.service DESTINATION ${UPK_SYSTEMD_UNITDIR}
          COMPONENT controller)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/controller/serve.json DESTINATION ${UPK_CONFDIR}
          COMPONENT controller)
  install(FILES ${PROJECT_SOURCE_DIR}/docs/operator-guide.md DESTINATION ${CMAKE_INSTALL_DOCDIR}
          COMPONENT controller)
endif()
