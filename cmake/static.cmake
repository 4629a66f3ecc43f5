# UPK_STATIC=ON: the agent's libraries as static archives, under the same
# target names the parts link (PkgConfig::CJSON, PkgConfig::LIBUV,
# PkgConfig::ZSTD, PkgConfig::NETTLE, upk_mbedcrypto, eclipse-paho-mqtt-c::paho-mqtt3a[s],
# OpenSSL::SSL/Crypto), so no part's CMakeLists changes. On Debian:
#  - libuv: libuv1-dev ships the archive as libuv_a.a;
#  - Paho: the .a files are installed but its CMake package names only the
#    shared libraries, so the archives are imported here by file name;
#  - mbedcrypto, nettle, zstd, OpenSSL: the -dev packages' .a files;
#  - cJSON: libcjson-dev has no archive. A libcjson.a on the search path is
#    used where there is one (Yocto, Buildroot); otherwise cJSON.c from
#    Debian's own source package, fetched by scripts/cjson-source.sh into the
#    build directory (UPK_CJSON_SOURCE_DIR), is compiled here. None of it is
#    copied into this tree.
find_package(PkgConfig REQUIRED)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)

function(upk_static_import target)
  cmake_parse_arguments(S "" "" "NAMES;INCLUDE_HEADER;LINK" ${ARGN})
  string(MAKE_C_IDENTIFIER "${target}" var)
  find_library(UPK_STATIC_${var} NAMES ${S_NAMES} NO_CACHE)
  if(NOT UPK_STATIC_${var})
    message(FATAL_ERROR "UPK_STATIC: no static archive (${S_NAMES}) for ${target}")
  endif()
  add_library(${target} STATIC IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES IMPORTED_LOCATION "${UPK_STATIC_${var}}"
                        INTERFACE_LINK_LIBRARIES "${S_LINK}")
  if(S_INCLUDE_HEADER)
    find_path(UPK_STATIC_INC_${var} ${S_INCLUDE_HEADER} NO_CACHE REQUIRED)
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
                                               "${UPK_STATIC_INC_${var}}")
  endif()
  message(STATUS "UPK_STATIC: ${target} = ${UPK_STATIC_${var}}")
endfunction()

upk_static_import(PkgConfig::LIBUV NAMES libuv_a.a libuv.a INCLUDE_HEADER uv.h
                  LINK "Threads::Threads;${CMAKE_DL_LIBS};m")
upk_static_import(PkgConfig::ZSTD NAMES libzstd.a INCLUDE_HEADER zstd.h)
upk_static_import(upk_mbedcrypto NAMES libmbedcrypto.a INCLUDE_HEADER mbedtls/ecdsa.h)
upk_static_import(PkgConfig::NETTLE NAMES libnettle.a INCLUDE_HEADER nettle/sha2.h)

find_library(UPK_CJSON_ARCHIVE NAMES libcjson.a)
set(UPK_CJSON_SOURCE_DIR "" CACHE PATH "cJSON source (cJSON.c) for a static agent; scripts/cjson-source.sh")
if(UPK_CJSON_ARCHIVE)
  upk_static_import(PkgConfig::CJSON NAMES libcjson.a INCLUDE_HEADER cjson/cJSON.h)
elseif(UPK_CJSON_SOURCE_DIR AND EXISTS "${UPK_CJSON_SOURCE_DIR}/cJSON.c")
  add_library(upk_cjson_static STATIC "${UPK_CJSON_SOURCE_DIR}/cJSON.c")
  # Its own code, not held to this project's warning flags.
  set_property(TARGET upk_cjson_static PROPERTY COMPILE_OPTIONS -w)
  # Headers as installed (<cjson/cJSON.h>, the same version's).
  find_path(UPK_CJSON_INCLUDE_DIR cjson/cJSON.h REQUIRED)
  target_include_directories(upk_cjson_static PUBLIC ${UPK_CJSON_INCLUDE_DIR})
  target_link_libraries(upk_cjson_static PUBLIC m)
  add_library(PkgConfig::CJSON ALIAS upk_cjson_static)
  message(STATUS "UPK_STATIC: cJSON compiled from ${UPK_CJSON_SOURCE_DIR}")
else()
  message(FATAL_ERROR "UPK_STATIC: no libcjson.a (Debian ships none). Fetch Debian's source "
                      "with `scripts/cjson-source.sh DIR` and pass -DUPK_CJSON_SOURCE_DIR=DIR/cjson-x.y.z")
endif()

if(UPK_NEED_TLS)
  set(OPENSSL_USE_STATIC_LIBS TRUE)
  find_package(OpenSSL REQUIRED)
  upk_static_import(eclipse-paho-mqtt-c::paho-mqtt3as NAMES libpaho-mqtt3as.a
                    INCLUDE_HEADER MQTTAsync.h
                    LINK "OpenSSL::SSL;OpenSSL::Crypto;Threads::Threads;${CMAKE_DL_LIBS}")
else()
  upk_static_import(eclipse-paho-mqtt-c::paho-mqtt3a NAMES libpaho-mqtt3a.a INCLUDE_HEADER MQTTAsync.h
                    LINK "Threads::Threads")
endif()

add_link_options(-static)
