# Cross-compiling for arm-linux-gnueabihf with Debian's cross toolchain
# (crossbuild-essential-armhf) against the multiarch -dev packages
# installed beside the host's (scripts/deps.sh cross ARCH; `make cross`):
#   cmake -S . -B build-cross -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-arm-linux-gnueabihf.cmake -DUPK_PARTS=agent
# The sysroot is / : libraries come from /usr/lib/arm-linux-gnueabihf, headers from
# /usr/include and /usr/include/arm-linux-gnueabihf. For another sysroot (a Yocto SDK, a
# Buildroot staging dir) use that system's own toolchain file instead.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)
# Programs run on the build host; libraries, headers and CMake packages are
# the target's only.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# pkg-config reads the target's .pc files only (not the host's).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/arm-linux-gnueabihf/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
