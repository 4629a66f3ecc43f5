/* placeholder: implemented by the proto work in progress */
