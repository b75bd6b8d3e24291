#include "trainer/output/atomic_write.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace loom::trainer {

namespace {

// Closes the descriptor on every path out, so a throw in the middle does not leak it.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // close() can report a deferred write error (NFS), so it is checked rather than left to ~Fd.
  int release_and_close() {
    const int fd = fd_;
    fd_ = -1;
    return ::close(fd);
  }

 private:
  int fd_;
};

}  // namespace

void write_file_synced(const std::string& path, std::string_view bytes, const std::string& tag) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  LOOM_CHECK(fd.get() >= 0, "[", tag, "] ", path, ": cannot create: ", std::strerror(errno));
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t w = ::write(fd.get(), p, left);
    if (w < 0 && errno == EINTR) continue;
    LOOM_CHECK(w >= 0, "[", tag, "] ", path, ": write failed: ", std::strerror(errno));
    p += w;
    left -= size_t(w);
  }
  LOOM_CHECK(::fsync(fd.get()) == 0, "[", tag, "] ", path,
             ": fsync failed: ", std::strerror(errno));
  LOOM_CHECK(fd.release_and_close() == 0, "[", tag, "] ", path,
             ": close failed: ", std::strerror(errno));
}

void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& tag) {
  const std::string tmp = path + ".tmp";
  try {
    write_file_synced(tmp, bytes, tag);
    LOOM_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "[", tag, "] ", path, ": rename from ",
               tmp, " failed: ", std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  fsync_directory(dir.empty() ? "." : dir, tag);
}

void fsync_directory(const std::string& dir, const std::string& tag) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  LOOM_CHECK(fd.get() >= 0, "[", tag, "] ", dir, ": cannot open directory: ", std::strerror(errno));
  // Some filesystems (and some FUSE mounts) do not implement fsync on directories; there the
  // rename is as durable as the filesystem makes it and refusing to continue would help nobody.
  if (::fsync(fd.get()) != 0 && errno != EINVAL && errno != ENOTSUP && errno != EROFS)
    LOOM_FAIL("[", tag, "] ", dir, ": fsync of directory failed: ", std::strerror(errno));
}

}  // namespace loom::trainer
